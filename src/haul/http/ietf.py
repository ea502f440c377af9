"""IETF "Resumable Uploads for HTTP" on the tus endpoint: a request that carries
``Upload-Draft-Interop-Version`` is answered by that draft (see :mod:`haul.wire.ietf`), over the
same upload service as tus, so a draft upload is an ordinary haul upload once complete."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from haul.config import Settings
from haul.core.models import Upload
from haul.core.pump import BodyInterrupted
from haul.core.service import UploadService
from haul.errors import (
    DigestMismatch,
    HaulError,
    InvalidHeader,
    InvalidMetadata,
    LengthAlreadySet,
    MethodNotAllowed,
    OffsetMismatch,
    UnsupportedMediaType,
)
from haul.http import logs
from haul.http.auth import Principal
from haul.http.body import request_body
from haul.wire import ietf
from haul.wire.digest import format_repr_digest, parse_repr_digest, sha256_from_repr_digest
from haul.wire.http import parse_idempotency_key
from haul.wire.tus import encode_metadata, parse_metadata

# The ASGI scope extension haul's transports offer for 1xx responses (haul.transport.http1).
INFORMATIONAL = "http.response.informational"
UPLOAD_RESUMPTION_SUPPORTED = 104

Informational = Callable[[int, Sequence[tuple[bytes, bytes]]], Awaitable[None]]
Locate = Callable[[Request, str], str]


class RequestInterrupted(HaulError):
    status = 400
    code = "ERR_REQUEST_INTERRUPTED"


class AppendTooLarge(HaulError):
    """A request body longer than the announced ``max-append-size``."""

    status = 413
    code = "ERR_APPEND_TOO_LARGE"


class RequestTimeout(HaulError):
    status = 408
    code = "ERR_REQUEST_TIMEOUT"


class Problem(HaulError):
    """An error the draft types: answered with its problem+json body."""

    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        super().__init__(body.decode(), headers={**headers, "Content-Type": ietf.PROBLEM_TYPE})
        self.status = status

    def render(self) -> str:
        return self.message


def _informational(request: Request) -> Informational | None:
    extension: Any = request.scope.get("extensions", {}).get(INFORMATIONAL)
    return None if extension is None else extension.get("send")


def _header_integer(request: Request, name: str) -> int | None:
    value = request.headers.get(name)
    return None if value is None else ietf.parse_integer(value, name)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


class IetfEndpoint:
    def __init__(self, service: UploadService, settings: Settings, location: Locate) -> None:
        self.service = service
        self.settings = settings
        self.location = location

    @staticmethod
    def draft(request: Request) -> ietf.Draft | None:
        """The draft a request speaks; None for a plain tus (or HTTP) request."""
        value = request.headers.get(ietf.INTEROP_HEADER)
        return None if value is None else ietf.parse_interop_version(value)

    @staticmethod
    def draft_of_get(request: Request) -> ietf.Draft | None:
        """The draft a GET on an upload speaks: only draft-12 on defines one (an offset
        retrieval); any other GET is haul's download, whatever its headers say."""
        value = request.headers.get(ietf.INTEROP_HEADER, "")
        try:
            draft = ietf.parse_interop_version(value)
        except InvalidHeader:
            return None
        return draft if draft.offset_by_get else None

    # -- routing --------------------------------------------------------------------------

    async def collection(
        self, request: Request, draft: ietf.Draft, principal: Callable[[], Principal]
    ) -> Response:
        try:
            return await self._collection(request, draft, principal)
        except HaulError as exc:
            raise self._answered(draft, exc) from None

    async def resource(
        self, request: Request, draft: ietf.Draft, upload_id: str, principal: Principal
    ) -> Response:
        try:
            return await self._resource(request, draft, upload_id, principal)
        except HaulError as exc:
            raise self._answered(draft, exc) from None

    def _answered(self, draft: ietf.Draft, exc: HaulError) -> HaulError:
        """An error as the draft answers it. From draft-12 on every answer says whether it is
        the finished upload's (a digest that does not match: resuming cannot help) or the
        protocol's, and a 413 names the limits the request broke."""
        if draft.response_complete:
            exc.headers.setdefault("Upload-Complete", ietf.format_boolean(
                isinstance(exc, DigestMismatch)))  # fmt: skip
            if exc.status == 413:
                exc.headers.update(self._limits(draft))
        return exc

    async def _collection(
        self, request: Request, draft: ietf.Draft, principal: Callable[[], Principal]
    ) -> Response:
        if request.method == "OPTIONS":
            return self.options(draft)
        if request.method != "POST":
            raise MethodNotAllowed(
                f"{request.method} is not allowed here", headers={"Allow": "OPTIONS, POST"}
            )
        return await self.create(request, draft, principal())

    async def _resource(
        self, request: Request, draft: ietf.Draft, upload_id: str, principal: Principal
    ) -> Response:
        if request.method == "OPTIONS":
            return self.options(draft)
        if request.method == "HEAD" or (request.method == "GET" and draft.offset_by_get):
            return await self.head(request, draft, upload_id, principal)
        if request.method == "PATCH":
            return await self.append(request, draft, upload_id, principal)
        if request.method == "DELETE":
            await self.service.terminate(upload_id, owner=principal.owner)
            return Response(status_code=204)
        raise MethodNotAllowed(
            f"{request.method} is not allowed on an upload",
            headers={"Allow": "OPTIONS, HEAD, PATCH, DELETE, GET"},
        )

    # -- handlers -------------------------------------------------------------------------

    def options(self, draft: ietf.Draft) -> Response:
        headers = {"Accept-Patch": ietf.PARTIAL_UPLOAD_TYPE} if draft.accept_patch else {}
        headers[ietf.VERSIONS_HEADER] = ietf.offered_versions()
        headers.update(self._limits(draft))
        return Response(status_code=204, headers=headers)

    async def create(self, request: Request, draft: ietf.Draft, principal: Principal) -> Response:
        complete = self._complete(request, draft)
        content_length = _header_integer(request, "content-length")
        length = self._length(request, draft, complete, content_length, 0)
        cap = self.settings.ietf_max_append_size
        if cap and draft.version >= 9:  # refused before anything is made: no upload, no 104
            _refuse_declared(content_length, cap)
        metadata: dict[str, bytes] = {}
        disposition = request.headers.get("content-disposition")
        name = ietf.filename_from_disposition(disposition) if disposition else None
        if name:
            metadata["filename"] = name.encode()
        media_type = _media_type(request)
        if media_type and media_type != ietf.PARTIAL_UPLOAD_TYPE:
            metadata["filetype"] = media_type.encode()
        metadata_raw = request.headers.get("upload-metadata")  # as tus-js-client sends it
        if metadata_raw is not None:
            if len(metadata_raw) > self.settings.max_metadata_size:
                raise InvalidMetadata(
                    f"Upload-Metadata is larger than {self.settings.max_metadata_size} bytes"
                )
            metadata = {**parse_metadata(metadata_raw), **metadata}
        upload = await self.service.create(
            length=length,
            metadata_raw=encode_metadata(metadata) if metadata else None,
            expected_sha256=self._repr_digest(request),
            owner=principal.owner,
            quota=principal.quota,
            idempotency_key=self._idempotency_key(request),
        )
        logs.tag(upload_id=upload.id)
        location = self.location(request, upload.id)
        inform = _informational(request)
        if inform is not None:  # the client can resume from here even if this request dies
            first = [(b"location", location.encode())]
            first += [(b"upload-draft-interop-version", str(draft.version).encode())]
            limits = self._limits(draft, upload)
            first += [(k.lower().encode(), v.encode()) for k, v in limits.items()]
            await inform(UPLOAD_RESUMPTION_SUPPORTED, first)
        # An instant upload needs none of the body; a creation repeated with its Idempotency-Key
        # whose upload holds bytes answers with its offset, from where the client goes on.
        if (content_length != 0 or complete) and not upload.complete and upload.offset == 0:
            upload = await self._write(
                request, draft, upload, 0, complete, content_length, creation=True
            )
        headers = {"Location": location, **self._state(draft, upload)}
        headers.update(self._limits(draft, upload))
        return Response(status_code=201, headers=headers)

    async def head(
        self, request: Request, draft: ietf.Draft, upload_id: str, principal: Principal
    ) -> Response:
        if "upload-offset" in request.headers or draft.complete_field.lower() in request.headers:
            raise InvalidHeader(
                f"offset retrieval takes no Upload-Offset or {draft.complete_field}"
            )
        upload = await self.service.reconcile(upload_id, owner=principal.owner)
        headers = {"Cache-Control": "no-store", **self._state(draft, upload)}
        if draft.upload_length and upload.length is not None:
            headers["Upload-Length"] = str(upload.length)
        headers.update(self._limits(draft, upload))
        return Response(status_code=204, headers=headers)

    async def append(
        self, request: Request, draft: ietf.Draft, upload_id: str, principal: Principal
    ) -> Response:
        if draft.partial_upload_type and _media_type(request) != ietf.PARTIAL_UPLOAD_TYPE:
            raise UnsupportedMediaType(f"an append must be {ietf.PARTIAL_UPLOAD_TYPE}")
        offset = _header_integer(request, "upload-offset")
        if offset is None:
            raise InvalidHeader("an append needs an Upload-Offset header")
        complete = self._complete(request, draft)
        content_length = _header_integer(request, "content-length")
        length = self._length(request, draft, complete, content_length, offset)
        upload = await self.service.status(upload_id, owner=principal.owner)
        if upload.complete and draft.completed_problem:
            raise Problem(400, ietf.completed_upload(), {})
        if upload.complete and draft.response_complete:
            return self._completed(upload, offset, content_length)
        upload = await self._write(request, draft, upload, offset, complete, content_length, length)
        return Response(status_code=204, headers=self._state(draft, upload))

    @staticmethod
    def _completed(upload: Upload, offset: int, content_length: int | None) -> Response:
        """An append to a completed upload (draft-12). A valid one, empty at its end, is a
        client whose final answer was lost: that answer again. Any other is an invalid
        operation, answered by the protocol (Upload-Complete: ?0)."""
        if offset != upload.offset:
            headers = {"Upload-Offset": str(upload.offset), "Upload-Complete": "?0"}
            raise Problem(409, ietf.mismatching_offset(upload.offset, offset), headers)
        if content_length != 0:  # bytes past the length
            raise Problem(400, ietf.inconsistent_length(), {"Upload-Complete": "?0"})
        headers = {"Upload-Offset": str(upload.offset), "Upload-Complete": "?1"}
        if upload.sha256 is not None:
            headers["Repr-Digest"] = format_repr_digest(upload.sha256)
        return Response(status_code=204, headers=headers)

    # -- helpers --------------------------------------------------------------------------

    async def _write(
        self,
        request: Request,
        draft: ietf.Draft,
        upload: Upload,
        offset: int,
        complete: bool,
        content_length: int | None,
        length: int | None = None,
        *,
        creation: bool = False,
    ) -> Upload:
        """The request body appended at ``offset``; a complete request without a length ends the
        upload where its body ends. Errors the draft types become its problem bodies."""
        body = request_body(request, self.settings.body_timeout, self.settings.min_speed)
        cap = self.settings.ietf_max_append_size
        if cap and (not creation or draft.version >= 9):  # draft-12 counts creations too
            body = _capped(body, cap, content_length)
        inform = _informational(request)
        if inform is not None and self.settings.ietf_progress_interval:
            stored = functools.partial(self.service.storage.offset, upload.stored_as)
            body = self._progress(body, stored, inform, self.settings.ietf_progress_interval)
        try:
            upload = await self.service.append(
                upload.id,
                offset,
                body,
                content_length=content_length,
                checksum=self._content_digest(request),
                new_length=length,
                declared_sha256=self._repr_digest(request),
                owner=upload.owner,
            )
            if complete and not upload.complete:  # the length is where the body ended
                upload = await self.service.append(
                    upload.id, upload.offset, _nothing(), new_length=upload.offset,
                    owner=upload.owner,
                )  # fmt: skip
        except BodyInterrupted as exc:  # what arrived is kept (the core commits it)
            headers = {"Connection": "close"}
            if exc.timed_out:
                raise RequestTimeout(str(exc), headers=headers) from None
            raise RequestInterrupted(str(exc), headers=headers) from None
        except OffsetMismatch:
            current = await self.service.status(upload.id, owner=upload.owner)
            if current.complete and draft.completed_problem:
                raise Problem(400, ietf.completed_upload(), {}) from None
            headers = {"Upload-Offset": str(current.offset)}
            if not draft.problems:
                raise OffsetMismatch("the offset does not match", headers=headers) from None
            raise Problem(409, ietf.mismatching_offset(current.offset, offset), headers) from None
        except LengthAlreadySet as exc:
            if draft.version < 7:
                raise
            raise Problem(400, ietf.inconsistent_length(), {}) from exc
        return upload

    @staticmethod
    async def _progress(
        body: AsyncIterator[bytes],
        stored: Callable[[], Awaitable[int]],
        inform: Informational,
        interval: int,
    ) -> AsyncIterator[bytes]:
        """The body, with a 104 after each ``interval`` bytes carrying the offset the storage
        holds by then: never bytes still in flight, so a later answer cannot report less."""
        received, reported = 0, await stored()
        for_next = interval
        async for piece in body:
            if received >= for_next:
                for_next = received + interval
                offset = await stored()
                if offset > reported:
                    reported = offset
                    await inform(UPLOAD_RESUMPTION_SUPPORTED, [(b"upload-offset", b"%d" % offset)])
            yield piece
            received += len(piece)

    @staticmethod
    def _complete(request: Request, draft: ietf.Draft) -> bool:
        complete = draft.parse_complete(dict(request.headers))
        if complete is None:
            raise InvalidHeader(f"the request needs {draft.complete_field}")
        return complete

    @staticmethod
    def _length(
        request: Request,
        draft: ietf.Draft,
        complete: bool,
        content_length: int | None,
        offset: int,
    ) -> int | None:
        """The upload's length as the request states it: the rest of it in a complete request,
        ``Upload-Length``; both must agree. Upload-Length is a field of draft-05 (interop 6) on,
        read in earlier versions too: tus-js-client sends it there, and with a stream for a
        source it may end an upload without ever saying it is complete."""
        from_body = offset + content_length if complete and content_length is not None else None
        declared = _header_integer(request, "upload-length")
        if from_body is not None and declared is not None and from_body != declared:
            if draft.version >= 7:
                raise Problem(400, ietf.inconsistent_length(), {})
            raise InvalidHeader("Upload-Length and the request's length disagree")
        return declared if declared is not None else from_body

    @staticmethod
    def _idempotency_key(request: Request) -> str | None:
        """``Idempotency-Key`` (as on tus creations): a retried creation is the same upload."""
        value = request.headers.get("idempotency-key")
        try:
            return None if value is None else parse_idempotency_key(value)
        except ValueError as exc:
            raise InvalidHeader(str(exc)) from None

    @staticmethod
    def _repr_digest(request: Request) -> str | None:
        value = request.headers.get("repr-digest")
        return sha256_from_repr_digest(value) if value else None

    @staticmethod
    def _content_digest(request: Request) -> tuple[str, bytes] | None:
        value = request.headers.get("content-digest")
        if not value:
            return None
        digest = parse_repr_digest(value).get("sha-256")
        if digest is None or len(digest) != 32:
            raise InvalidHeader("Content-Digest must include a 32-byte sha-256")
        return ("sha256", digest)

    @staticmethod
    def _state(draft: ietf.Draft, upload: Upload) -> dict[str, str]:
        state = {
            "Upload-Offset": str(upload.offset),
            draft.complete_field: draft.complete_value(upload.complete),
        }
        if upload.complete and upload.sha256 is not None:  # RFC 9530: what was stored
            state["Repr-Digest"] = format_repr_digest(upload.sha256)
        return state

    def _limits(self, draft: ietf.Draft, upload: Upload | None = None) -> dict[str, str]:
        """``Upload-Limit``. ``max-age`` is the upload's remaining life; before draft-12 the
        configured expiration, from draft-12 on counted down from the upload's own expiry
        (renewed by each write), so the end it implies never moves earlier. A complete upload
        does not expire."""
        if not draft.limits:
            return {}
        age = math.ceil(self.settings.expiration) if self.settings.expiration else None
        if draft.always_limits and upload is not None:
            left = None if upload.expires_at is None else upload.expires_at - time.time()
            age = None if left is None else max(0, math.ceil(left))
        append = self.settings.ietf_max_append_size or None
        value = draft.limit_value(self.settings.max_size or None, age, append)
        return {"Upload-Limit": value} if value else {}


async def _capped(
    body: AsyncIterator[bytes], cap: int, content_length: int | None
) -> AsyncIterator[bytes]:
    """The body, refused (413) once it is longer than ``cap``: at once when Content-Length
    says so, else when the byte past it arrives (the core then keeps none of the request)."""
    _refuse_declared(content_length, cap)
    received = 0
    async for piece in body:
        received += len(piece)
        if received > cap:
            raise _too_large(cap)
        yield piece


def _refuse_declared(content_length: int | None, cap: int) -> None:
    """413 at once for a request whose Content-Length is over ``cap``."""
    if content_length is not None and content_length > cap:
        raise _too_large(cap)


def _too_large(cap: int) -> AppendTooLarge:
    return AppendTooLarge(f"a request may carry at most {cap} bytes (max-append-size)")


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""
