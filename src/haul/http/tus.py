"""The tus 1.0.0 surface: OPTIONS, POST, HEAD, PATCH, DELETE (and GET for downloads)."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from haul.config import Settings
from haul.core.models import Upload
from haul.core.policy import NAME_KEYS, TYPE_KEYS
from haul.core.pump import BodyInterrupted
from haul.core.service import UploadService, is_upload_id
from haul.errors import (
    BadRequest,
    HaulError,
    InvalidConcat,
    InvalidHeader,
    InvalidMetadata,
    LengthRequired,
    MethodNotAllowed,
    NotFound,
    Unauthorized,
    UnsupportedMediaType,
    VersionUnsupported,
)
from haul.http import logs
from haul.http.auth import Authenticator, Principal
from haul.http.body import request_body
from haul.http.ietf import IetfEndpoint
from haul.http.links import LinkSigner
from haul.wire import ietf
from haul.wire.checksums import ALGORITHMS
from haul.wire.digest import format_repr_digest, sha256_from_metadata, sha256_from_repr_digest
from haul.wire.http import content_disposition, parse_idempotency_key, parse_range
from haul.wire.possession import Challenge
from haul.wire.tus import (
    OFFSET_CONTENT_TYPE,
    TUS_VERSION,
    http_date,
    parse_checksum,
    parse_concat,
    parse_metadata,
    parse_uint,
)

EXTENSIONS = (
    "creation",
    "creation-with-upload",
    "creation-defer-length",
    "expiration",
    "checksum",
    "termination",
    "concatenation",
    "concatenation-unfinished",
)
# Served inline only where browsers cannot turn the bytes into script; all else is an attachment.
_INLINE_PREFIXES = ("image/", "video/", "audio/")
_INLINE_EXCLUDED = ("image/svg+xml",)
_MIME_PART = r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}"
_MEDIA_TYPE = re.compile(f"{_MIME_PART}/{_MIME_PART}")
_HOST = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


class RequestInterrupted(HaulError):
    status = 400
    code = "ERR_REQUEST_INTERRUPTED"


class RequestTimeout(HaulError):
    status = 408
    code = "ERR_REQUEST_TIMEOUT"


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _authorization(request: Request) -> str | None:
    return request.headers.get("authorization")


def _header_uint(request: Request, name: str) -> int | None:
    value = request.headers.get(name)
    return None if value is None else parse_uint(value, name)


def _idempotency_key(request: Request) -> str | None:
    value = request.headers.get("idempotency-key")
    try:
        return None if value is None else parse_idempotency_key(value)
    except ValueError as exc:
        raise InvalidHeader(str(exc)) from None


def _base64(value: str, header: str) -> bytes:
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidHeader(f"{header} is not valid base64") from None


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    if length is not None:
        return parse_uint(length, "Content-Length") > 0
    return "chunked" in request.headers.get("transfer-encoding", "").lower()


class TusEndpoint:
    def __init__(self, service: UploadService, settings: Settings, auth: Authenticator) -> None:
        self.service = service
        self.settings = settings
        self.base_path = settings.base_path
        self.auth = auth
        self.links = LinkSigner(settings.link_secret, settings.link_ttl)
        self.ietf = IetfEndpoint(service, settings, self.location)

    # -- routing --------------------------------------------------------------------------

    async def collection(self, request: Request) -> Response:
        draft = self.ietf.draft(request)
        if draft is not None:  # IETF resumable uploads (haul.http.ietf)
            return await self.ietf.collection(request, draft, lambda: self._authenticate(request))
        if request.method == "OPTIONS":
            return await self.options(request)
        if request.method != "POST":
            raise MethodNotAllowed(
                f"{request.method} is not allowed here", headers={"Allow": "OPTIONS, POST"}
            )
        self._check_version(request)
        return await self.create(request, self._authenticate(request))

    async def resource(self, request: Request) -> Response:
        upload_id: str = request.path_params["upload_id"]
        logs.tag(upload_id=upload_id)
        handlers: dict[str, Callable[[Request, str, Principal], Awaitable[Response]]] = {
            "HEAD": self.head,
            "PATCH": self.patch,
            "DELETE": self.delete,
            "GET": self.download,
        }
        get = request.method == "GET"
        draft = self.ietf.draft_of_get(request) if get else self.ietf.draft(request)
        if request.method == "OPTIONS":
            return self.ietf.options(draft) if draft else await self.options(request)
        handler = handlers.get(request.method)
        if handler is None:
            raise MethodNotAllowed(
                f"{request.method} is not allowed on an upload",
                headers={"Allow": "OPTIONS, HEAD, PATCH, DELETE, GET"},
            )
        if request.method != "GET" and draft is None:
            self._check_version(request)
        if not is_upload_id(upload_id):  # before anything (a lock file) is named after it
            shown = upload_id if upload_id.isprintable() and len(upload_id) <= 64 else "?"
            raise NotFound(f"upload {shown} does not exist")
        principal = await self._linked(request, upload_id)
        if principal is None:
            principal = self._authenticate(request)
        if draft is not None:
            return await self.ietf.resource(request, draft, upload_id, principal)
        return await handler(request, upload_id, principal)

    def _authenticate(self, request: Request) -> Principal:
        principal = self.auth.authenticate(_authorization(request))
        logs.tag(owner=principal.owner)
        return principal

    async def _linked(self, request: Request, upload_id: str) -> Principal | None:
        """The owner, for a GET of a signed download link; None when it is not one."""
        query = request.query_params
        if request.method != "GET" or "signature" not in query:
            return None
        owner = await self.service.owner_of(upload_id)
        valid = owner is not None and self.links.valid(
            upload_id, owner, query.get("expires", ""), query["signature"]
        )
        if not valid:
            raise Unauthorized("the download link is not valid or has expired")
        assert owner is not None
        return Principal(owner, self.auth.quota)

    @staticmethod
    def _check_version(request: Request) -> None:
        version = request.headers.get("tus-resumable")
        if version != TUS_VERSION:
            raise VersionUnsupported(
                f"this server speaks tus {TUS_VERSION}; the request says {version or 'nothing'}"
            )

    # -- handlers -------------------------------------------------------------------------

    async def options(self, request: Request) -> Response:
        headers = {
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": ",".join(EXTENSIONS),
            "Tus-Checksum-Algorithm": ",".join(ALGORITHMS),
            ietf.VERSIONS_HEADER: ietf.offered_versions(),  # the same endpoint's other protocol
        }
        if self.settings.max_size:
            headers["Tus-Max-Size"] = str(self.settings.max_size)
        return Response(status_code=204, headers=headers)

    async def create(self, request: Request, principal: Principal) -> Response:
        metadata_raw = request.headers.get("upload-metadata")
        metadata: dict[str, bytes] = {}
        if metadata_raw is not None:
            if len(metadata_raw) > self.settings.max_metadata_size:
                raise InvalidMetadata(
                    f"Upload-Metadata is larger than {self.settings.max_metadata_size} bytes"
                )
            metadata = parse_metadata(metadata_raw)  # validated now, stored verbatim
        expected = self._declared_sha256(request, metadata)
        concat_header = request.headers.get("upload-concat")
        concat = parse_concat(concat_header) if concat_header is not None else None
        length = _header_uint(request, "upload-length")
        defer = request.headers.get("upload-defer-length")
        if defer is not None and defer.strip() != "1":
            raise InvalidHeader("Upload-Defer-Length must be 1")
        has_body = _has_body(request)

        if concat is not None and not concat.partial:
            if length is not None or defer is not None:
                raise InvalidConcat("a final upload takes its length from its partial uploads")
            if has_body:
                raise InvalidConcat("a final upload cannot carry a body")
            part_ids = [self._id_from_url(url) for url in concat.parts]
            upload = await self.service.create_final(
                part_ids,
                metadata_raw=metadata_raw,
                expected_sha256=expected,
                owner=principal.owner,
                quota=principal.quota,
            )
            return self._created(request, upload)

        if length is None and defer is None:
            raise LengthRequired("creation needs Upload-Length or Upload-Defer-Length: 1")
        if length is not None and defer is not None:
            raise InvalidHeader("send either Upload-Length or Upload-Defer-Length, not both")
        if has_body and _media_type(request) != OFFSET_CONTENT_TYPE:
            raise UnsupportedMediaType(f"a creation body must be {OFFSET_CONTENT_TYPE}")
        checksum = self._checksum(request)
        upload = await self.service.create(
            length=length,
            metadata_raw=metadata_raw,
            partial=concat is not None,
            expected_sha256=expected,
            owner=principal.owner,
            quota=principal.quota,
            idempotency_key=_idempotency_key(request),
        )
        logs.tag(upload_id=upload.id)
        # An instant upload needs none of the body; a repeated creation whose upload already
        # holds bytes answers with its offset, from where the client goes on.
        if has_body and not upload.complete and upload.offset == 0:
            upload = await self._append(request, upload.id, principal, 0, checksum)
        return self._created(request, upload)

    async def head(self, request: Request, upload_id: str, principal: Principal) -> Response:
        upload = await self.service.reconcile(upload_id, owner=principal.owner)
        headers = {"Cache-Control": "no-store"}
        # A final upload has no offset until its partials are assembled (concatenation).
        if not upload.is_final or upload.complete:
            headers["Upload-Offset"] = str(upload.offset)
        if upload.length is not None:
            headers["Upload-Length"] = str(upload.length)
        elif not upload.is_final:
            headers["Upload-Defer-Length"] = "1"
        if upload.metadata_raw is not None:
            headers["Upload-Metadata"] = upload.metadata_raw
        if upload.concat is not None:
            headers["Upload-Concat"] = self._concat_value(upload)
        headers.update(self._expires(upload))
        headers.update(self._digest(upload))
        headers.update(self._challenge(upload))
        if upload.complete and principal.owner:  # anonymous uploads need no signed link
            link = f"{self.base_path}{upload.id}?{self.links.query(upload.id, principal.owner)}"
            headers["Haul-Download-Link"] = link
        return Response(status_code=200, headers=headers)

    async def patch(self, request: Request, upload_id: str, principal: Principal) -> Response:
        if _media_type(request) != OFFSET_CONTENT_TYPE:
            raise UnsupportedMediaType(f"PATCH bodies must be {OFFSET_CONTENT_TYPE}")
        offset = _header_uint(request, "upload-offset")
        if offset is None:
            raise InvalidHeader("PATCH needs an Upload-Offset header")
        proof = request.headers.get("haul-proof")
        if proof is not None:  # the answer to a proof-of-possession challenge, instead of bytes
            proof_bytes = _base64(proof, "Haul-Proof")
            upload = await self.service.prove(upload_id, proof_bytes, owner=principal.owner)
        else:
            checksum = self._checksum(request)
            upload = await self._append(request, upload_id, principal, offset, checksum)
        headers = {"Upload-Offset": str(upload.offset), **self._expires(upload)}
        return Response(status_code=204, headers=headers)

    async def delete(self, request: Request, upload_id: str, principal: Principal) -> Response:
        await self.service.terminate(upload_id, owner=principal.owner)
        return Response(status_code=204)

    async def download(self, request: Request, upload_id: str, principal: Principal) -> Response:
        upload = await self.service.reconcile(upload_id, owner=principal.owner)
        size = upload.length or 0
        etag = f'"{upload.id}-{size}"'
        headers = {
            "ETag": etag,
            "Accept-Ranges": "bytes",
            "Cache-Control": "private, no-cache",
            "X-Content-Type-Options": "nosniff",
        }
        if request.headers.get("if-none-match") == etag and upload.complete:
            return Response(status_code=304, headers=headers)
        span = None
        range_header = request.headers.get("range")
        if range_header and upload.complete and request.headers.get("if-range", etag) == etag:
            span = parse_range(range_header, size)
        start, stop = (span[0], span[1] + 1) if span else (0, size)
        upload, stream = await self.service.open_download(
            upload_id, start, stop, owner=principal.owner
        )
        media_type = self._content_type(upload)
        name = upload.text_metadata(*NAME_KEYS) or upload.id
        headers["Content-Type"] = media_type
        headers["Content-Disposition"] = content_disposition(name, inline=self._inline(media_type))
        headers["Content-Length"] = str(stop - start)
        headers.update(self._digest(upload))
        status = 200
        if span:
            status = 206
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        return StreamingResponse(stream, status_code=status, headers=headers)

    # -- helpers --------------------------------------------------------------------------

    async def _append(
        self,
        request: Request,
        upload_id: str,
        principal: Principal,
        offset: int,
        checksum: tuple[str, bytes] | None,
    ) -> Upload:
        new_length = _header_uint(request, "upload-length")
        content_length = _header_uint(request, "content-length")
        body = request_body(request, self.settings.body_timeout, self.settings.min_speed)
        try:
            return await self.service.append(
                upload_id,
                offset,
                body,
                content_length=content_length,
                checksum=checksum,
                new_length=new_length,
                declared_sha256=self._declared_sha256(request, {}),
                owner=principal.owner,
            )
        except BodyInterrupted as exc:
            headers = {"Connection": "close"}
            if exc.timed_out:
                raise RequestTimeout(str(exc), headers=headers) from None
            raise RequestInterrupted(str(exc), headers=headers) from None

    @staticmethod
    def _declared_sha256(request: Request, metadata: dict[str, bytes]) -> str | None:
        """The whole-upload SHA-256 from ``Repr-Digest`` or, for tus clients that can only send
        metadata, from the ``sha256`` metadata key."""
        header = request.headers.get("repr-digest")
        from_header = sha256_from_repr_digest(header) if header else None
        from_metadata = sha256_from_metadata(metadata["sha256"]) if "sha256" in metadata else None
        if from_header and from_metadata and from_header != from_metadata:
            raise InvalidHeader("Repr-Digest and the sha256 metadata declare different digests")
        return from_header or from_metadata

    @staticmethod
    def _challenge(upload: Upload) -> dict[str, str]:
        if upload.challenge is None or upload.complete:
            return {}
        return {"Haul-Challenge": Challenge.from_json(upload.challenge).header()}

    @staticmethod
    def _digest(upload: Upload) -> dict[str, str]:
        if not upload.complete:
            return {}
        if upload.sha256 is None:
            # Verified in the background: a client waiting to hear the digest asks again.
            return {"Haul-Digest-Pending": "?1"} if upload.digest_pending else {}
        return {"Repr-Digest": format_repr_digest(upload.sha256)}

    @staticmethod
    def _checksum(request: Request) -> tuple[str, bytes] | None:
        value = request.headers.get("upload-checksum")
        return parse_checksum(value) if value is not None else None

    def _id_from_url(self, url: str) -> str:
        path = urlsplit(url).path
        if not path.startswith(self.base_path):
            raise InvalidConcat(f"{url!r} is not an upload on this server")
        upload_id = path[len(self.base_path) :].strip("/")
        if not is_upload_id(upload_id):
            raise InvalidConcat(f"{url!r} is not an upload on this server")
        return upload_id

    def _concat_value(self, upload: Upload) -> str:
        if not upload.is_final:
            return "partial"
        return "final;" + " ".join(f"{self.base_path}{part}" for part in upload.parts)

    @staticmethod
    def _expires(upload: Upload) -> dict[str, str]:
        if upload.expires_at is None:
            return {}
        return {"Upload-Expires": http_date(datetime.fromtimestamp(upload.expires_at, UTC))}

    def _created(self, request: Request, upload: Upload) -> Response:
        headers = {"Location": self.location(request, upload.id)}
        if not upload.is_final or upload.complete:
            headers["Upload-Offset"] = str(upload.offset)
        headers.update(self._expires(upload))
        headers.update(self._challenge(upload))
        return Response(status_code=201, headers=headers)

    def location(self, request: Request, upload_id: str) -> str:
        path = f"{self.base_path}{upload_id}"
        if self.settings.relative_location:
            return path
        scheme = request.url.scheme
        host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
        if self.settings.trust_proxy:
            scheme = request.headers.get("x-forwarded-proto", scheme).split(",")[0].strip()
            host = request.headers.get("x-forwarded-host", host).split(",")[0].strip()
        if scheme not in ("http", "https"):
            raise BadRequest(f"X-Forwarded-Proto {scheme!r} is not http or https")
        if not _HOST.fullmatch(host):
            raise BadRequest(f"the host {host!r} is not a valid host name")
        return f"{scheme}://{host}{path}"

    @staticmethod
    def _content_type(upload: Upload) -> str:
        declared = upload.text_metadata(*TYPE_KEYS) or ""
        declared = declared.strip().lower()
        return declared if _MEDIA_TYPE.fullmatch(declared) else "application/octet-stream"

    @staticmethod
    def _inline(media_type: str) -> bool:
        return media_type.startswith(_INLINE_PREFIXES) and media_type not in _INLINE_EXCLUDED
