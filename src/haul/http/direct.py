"""Direct upload: clients send parts straight to the object store with URLs that haul
presigns, so the bytes never pass through haul. The endpoints follow the contract of Uppy's
@uppy/aws-s3 companion mode (``companionEndpoint``), which ``haul upload --direct`` speaks too.

    POST   /s3/multipart                          {filename, type, metadata} -> {key, uploadId}
    GET    /s3/multipart/{uploadId}/{n}?key=K     -> {url, expires}   (PUT part n there)
    GET    /s3/multipart/{uploadId}/{n}?key=K&md5=M -> {url, expires, headers}
    GET    /s3/multipart/{uploadId}?key=K         -> [{PartNumber, Size, ETag}]
    POST   /s3/multipart/{uploadId}/complete?key=K  {parts: [{PartNumber, ETag}], sha256?}
                                                  -> {location, key}
    DELETE /s3/multipart/{uploadId}?key=K         -> 204 (aborted)

``key`` is the haul upload id; every call is checked against the upload's owner. With ``md5``
(the part's MD5, base64) the URL is signed with that Content-MD5, returned in ``headers`` for
the PUT (Uppy sends a signed part's ``headers``): the store itself refuses a part whose bytes
differ. An upload completes only after the store's own list of parts confirms it and the
usual checks (size, content policy, scan) have run; its SHA-256, against ``sha256`` (hex) if
the completion declares one, is verified in the background when the server verifies later
(the default on S3): until then HEAD reports no Repr-Digest and its content is never shared.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from haul.config import Settings
from haul.core.interfaces import DirectUploads
from haul.core.models import Upload
from haul.core.service import UploadService
from haul.errors import BadRequest, NotFound
from haul.http.auth import Authenticator, Principal
from haul.http.routing import ExactRoute
from haul.wire.tus import encode_metadata

MAX_PARTS = 10_000
_HEX64 = re.compile(r"[0-9a-f]{64}")
CREATION_FIELDS: dict[str, tuple[type, str]] = {
    "filename": (str, "a string"),
    "type": (str, "a string (a media type)"),
    "metadata": (dict, "a JSON object"),
}


def _parts(given: object) -> list[tuple[int, str]]:
    """The (PartNumber, ETag) pairs of a completion's ``parts``, or 400."""
    if not isinstance(given, list) or not given:
        raise BadRequest("parts must be a list of {PartNumber, ETag}")
    parts = []
    for item in given:
        if not isinstance(item, dict):
            raise BadRequest("each part must be an object {PartNumber, ETag}")
        number, etag = item.get("PartNumber"), item.get("ETag")
        if isinstance(number, bool) or not isinstance(number, int) or not isinstance(etag, str):
            raise BadRequest("each part needs an integer PartNumber and a string ETag")
        if not 1 <= number <= MAX_PARTS:
            raise BadRequest(f"part numbers run from 1 to {MAX_PARTS}")
        parts.append((number, etag))
    return parts


def _md5(given: str | None) -> str | None:
    """A part's MD5 as S3's Content-MD5 wants it (base64 of 16 bytes), or 400."""
    if given is None:
        return None
    try:
        raw = base64.b64decode(given, validate=True)
    except binascii.Error:
        raw = b""
    if len(raw) != 16:
        raise BadRequest("md5 must be the base64 of a part's 16-byte MD5 digest")
    return given


def _sha256(given: object) -> str | None:
    """The whole file's declared SHA-256 (64 hex digits), or 400."""
    if given is None:
        return None
    if not isinstance(given, str) or not _HEX64.fullmatch(given.lower()):
        raise BadRequest("sha256 must be the file's SHA-256 as 64 hex digits")
    return given.lower()


class DirectEndpoint:
    def __init__(
        self,
        service: UploadService,
        storage: DirectUploads,
        settings: Settings,
        auth: Authenticator,
    ) -> None:
        self.service = service
        self.storage = storage
        self.settings = settings
        self.auth = auth

    def routes(self) -> list[BaseRoute]:
        return [
            ExactRoute("/s3/multipart", self.create, methods=["POST"]),
            ExactRoute("/s3/multipart/{upload_id}", self.parts, methods=["GET", "DELETE"]),
            ExactRoute("/s3/multipart/{upload_id}/complete", self.complete, methods=["POST"]),
            ExactRoute("/s3/multipart/{upload_id}/{part:int}", self.sign, methods=["GET"]),
        ]

    def _principal(self, request: Request) -> Principal:
        return self.auth.authenticate(request.headers.get("authorization"))

    async def _json(self, request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            raise BadRequest("the body must be JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        return body

    async def _named(self, request: Request, principal: Principal) -> Upload:
        """The upload named by ?key=, which must be the caller's (404 for others). Its record,
        not the store: a signature per part must not cost a store round trip."""
        return await self.service.record(request.query_params.get("key", ""), owner=principal.owner)

    async def _in_progress(self, request: Request, upload: Upload) -> Upload:
        """``upload``, unless it is complete or not this multipart upload's."""
        if (
            upload.complete
            or await self.storage.multipart_id(upload.stored_as) != request.path_params["upload_id"]
        ):
            raise NotFound("no such multipart upload in progress")
        return upload

    async def _owned(self, request: Request, principal: Principal) -> Upload:
        """The upload named by ?key=, the caller's, with this multipart id in progress."""
        return await self._in_progress(request, await self._named(request, principal))

    async def create(self, request: Request) -> Response:
        principal = self._principal(request)
        body = await self._json(request)
        for name, (kind_of_value, described) in CREATION_FIELDS.items():
            if name in body and not isinstance(body[name], kind_of_value):
                raise BadRequest(f"{name} must be {described}")  # absent is fine, null is not
        filename, kind = body.get("filename"), body.get("type")
        values: dict[str, bytes] = {}
        if filename:
            values["filename"] = filename.encode()
        if kind:
            values["filetype"] = kind.encode()
        upload = await self.service.create(
            length=None,
            metadata_raw=encode_metadata(values) if values else None,
            owner=principal.owner,
            quota=principal.quota,
        )
        multipart = await self.storage.multipart_id(upload.stored_as)
        return JSONResponse({"key": upload.id, "uploadId": multipart})

    async def sign(self, request: Request) -> Response:
        principal = self._principal(request)
        upload = await self._owned(request, principal)
        part: int = request.path_params["part"]
        if not 1 <= part <= MAX_PARTS:
            raise BadRequest(f"part numbers run from 1 to {MAX_PARTS}")
        ttl = int(self.settings.direct_url_ttl)
        md5 = _md5(request.query_params.get("md5"))
        url = await self.storage.presign_part(upload.stored_as, part, ttl, md5=md5)
        if md5 is None:
            return JSONResponse({"url": url, "expires": ttl})
        return JSONResponse({"url": url, "expires": ttl, "headers": {"Content-MD5": md5}})

    async def parts(self, request: Request) -> Response:
        principal = self._principal(request)
        upload = await self._owned(request, principal)
        if request.method == "DELETE":
            await self.service.terminate(upload.id, owner=principal.owner)  # aborts it in S3
            return Response(status_code=204)
        return JSONResponse(await self.storage.list_parts(upload.stored_as))

    async def complete(self, request: Request) -> Response:
        principal = self._principal(request)
        body = await self._json(request)
        parts = _parts(body.get("parts"))
        declared = _sha256(body.get("sha256"))
        upload = await self._named(request, principal)
        if not upload.complete:
            upload = await self._in_progress(request, upload)
            upload = await self.service.complete_direct(
                upload.id, parts, owner=principal.owner, declared_sha256=declared
            )
        # else a completion sent again (its first answer was lost): the same answer, as the
        # store's multipart upload is gone once completed.
        location = str(request.url_for("upload", upload_id=upload.id))
        return JSONResponse({"location": location, "key": upload.id})
