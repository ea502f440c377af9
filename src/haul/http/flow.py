"""flow.js and Resumable.js on the same core: one endpoint, /flow, speaking both parameter sets
(flowChunkNumber, ... or resumableChunkNumber, ...).

    GET  /flow?...   the test: 200 when the chunk is held (or the whole file is), 204 when not
                     (never 404: flow.js takes 404 as a permanent failure of the file)
    POST /flow       multipart (the chunk as file part ``file``, the parameters as fields), or
                     flow.js's ``method: "octet"`` (parameters in the query, the raw chunk as body)

Each chunk is a tus partial upload named by (owner, identifier, sizes, chunk number); when the
last one arrives the partials are joined, without copying bytes, into one upload, and that
answer's body is JSON with the upload's ``url``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import IO

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from haul.core.lifecycle import keyed_upload_id
from haul.core.models import Upload, UploadState
from haul.core.pump import BodyInterrupted
from haul.core.service import UploadService
from haul.errors import BadRequest, ExceedsLength, Gone, InvalidConcat, TypeNotAllowed
from haul.http import logs
from haul.http.auth import Authenticator, Principal
from haul.http.body import request_body
from haul.http.chunks import Counted, judged_first, replay, spooled
from haul.http.form_stream import FormStream, boundary_of
from haul.http.routing import ExactRoute
from haul.http.tus import RequestInterrupted, RequestTimeout
from haul.wire.tus import encode_metadata

MAX_CHUNKS = 100_000
_NAMES = (
    "ChunkNumber", "ChunkSize", "CurrentChunkSize", "TotalSize", "Identifier", "Filename",
    "RelativePath", "TotalChunks",
)  # fmt: skip
_PREFIXES = ("flow", "resumable")


@dataclass(frozen=True)
class FlowChunk:
    """One chunk as the client describes it, checked to add up."""

    number: int  # 1-based
    chunk_size: int
    size: int
    total_size: int
    total_chunks: int
    identifier: str
    filename: str

    def key(self, number: int) -> str:
        return f"flow\0{self.identifier}\0{self.total_size}\0{self.chunk_size}\0{number}"


def _whole(params: dict[str, str], prefix: str, name: str, low: int) -> int:
    text = params.get(name)
    if text is None:
        raise BadRequest(f"the parameter {prefix}{name} is missing")
    if not text.isascii() or not text.isdigit() or int(text) < low:
        shown = text[:40]
        raise BadRequest(f"{prefix}{name} must be a whole number of at least {low}, not {shown!r}")
    return int(text)


def parse_chunk(raw: dict[str, str]) -> FlowChunk:
    """The parameters of either library, checked: numbers in range, sizes that add up."""
    prefix = next((p for p in _PREFIXES if f"{p}ChunkNumber" in raw), None)
    if prefix is None:
        raise BadRequest("flowChunkNumber (or resumableChunkNumber) is missing")
    params = {name: raw[prefix + name] for name in _NAMES if prefix + name in raw}
    number = _whole(params, prefix, "ChunkNumber", 1)
    chunk_size = _whole(params, prefix, "ChunkSize", 1)
    total_size = _whole(params, prefix, "TotalSize", 0)
    total_chunks = _whole(params, prefix, "TotalChunks", 1)
    size = _whole(params, prefix, "CurrentChunkSize", 0)
    identifier = params.get("Identifier", "")
    if not identifier or len(identifier) > 512:
        raise BadRequest(f"{prefix}Identifier must be 1 to 512 characters")
    if total_chunks > MAX_CHUNKS:
        raise BadRequest(f"{prefix}TotalChunks must be at most {MAX_CHUNKS}")
    # flow.js and Resumable.js: max(floor(size / chunkSize), 1), the last chunk taking the rest
    # (up to just under twice chunkSize); with forceChunkSize: ceil(size / chunkSize).
    floor = max(total_size // chunk_size, 1)
    ceil = max(-(-total_size // chunk_size), 1)
    if total_chunks not in (floor, ceil):
        raise BadRequest(
            f"{prefix}TotalChunks {total_chunks} does not fit {prefix}TotalSize {total_size} "
            f"in chunks of {chunk_size} ({floor} or {ceil})"
        )
    if number > total_chunks:
        raise BadRequest(f"{prefix}ChunkNumber {number} is beyond {prefix}TotalChunks")
    owed = chunk_size if number < total_chunks else total_size - chunk_size * (total_chunks - 1)
    if size != owed:
        raise BadRequest(f"{prefix}CurrentChunkSize must be {owed} for chunk {number}, not {size}")
    filename = params.get("Filename") or params.get("RelativePath") or identifier
    return FlowChunk(
        number, chunk_size, size, total_size, total_chunks, identifier, filename[:1024]
    )


class FlowEndpoint:
    def __init__(
        self,
        service: UploadService,
        auth: Authenticator,
        locate: Callable[[Request, str], str],
        *,
        prefix: str,
        body_timeout: float,
        min_speed: int,
    ) -> None:
        self.service = service
        self.auth = auth
        self.locate = locate
        self.path = prefix + "/flow"
        self.body_timeout = body_timeout
        self.min_speed = min_speed

    def routes(self) -> list[BaseRoute]:
        return [ExactRoute(self.path, self.handle, methods=["GET", "POST"])]

    async def handle(self, request: Request) -> Response:
        principal = self.auth.authenticate(request.headers.get("authorization"))
        logs.tag(owner=principal.owner)
        if request.method == "GET":
            return await self.test(request, principal)
        return await self.receive(request, principal)

    def _id(self, principal: Principal, chunk: FlowChunk, number: int) -> str:
        return keyed_upload_id(principal.owner, chunk.key(number))

    def _ids(self, principal: Principal, chunk: FlowChunk) -> list[str]:
        return [self._id(principal, chunk, n) for n in range(1, chunk.total_chunks + 1)]

    async def _assembled(self, principal: Principal, chunk: FlowChunk) -> Upload | None:
        ids = tuple(self._ids(principal, chunk))
        for final in await self.service.store.finals_listing(ids[0]):
            ours = final.owner == principal.owner and final.state is UploadState.COMPLETE
            if ours and final.parts == ids:
                return final
        return None

    async def test(self, request: Request, principal: Principal) -> Response:
        chunk = parse_chunk(dict(request.query_params))
        if await self._assembled(principal, chunk) is not None:
            return Response(status_code=200)
        upload = await self.service.store.get(self._id(principal, chunk, chunk.number))
        held = upload is not None and upload.owner == principal.owner and upload.complete
        return Response(status_code=200 if held else 204)

    async def receive(self, request: Request, principal: Principal) -> Response:
        params = dict(request.query_params)
        body = request_body(request, self.body_timeout, self.min_speed)
        spool: IO[bytes] | None = None
        try:
            if request.headers.get("content-type", "").lower().startswith("multipart/"):
                form = FormStream(body, boundary_of(request.headers.get("content-type")))
                stored: FlowChunk | None = None
                async for part in form.parts():
                    if part.name == "file":
                        if stored is not None or spool is not None:
                            raise BadRequest("the form carries more than one file part")
                        if any(n.endswith("ChunkNumber") for n in params):
                            stored = await self._store(principal, parse_chunk(params), part.data)
                        else:
                            spool = await spooled(part.data)
                    elif part.name.startswith(_PREFIXES):
                        params[part.name] = (await part.text()).strip()
                if stored is None and spool is None:
                    raise BadRequest("the form has no file part named file")
                if stored is None:
                    assert spool is not None
                    stored = await self._store(principal, parse_chunk(params), replay(spool))
                chunk = stored
            else:
                chunk = await self._store(principal, parse_chunk(params), body)
        except BodyInterrupted as exc:
            error = RequestTimeout if exc.timed_out else RequestInterrupted
            raise error(str(exc), headers={"Connection": "close"}) from None
        finally:
            if spool is not None:
                spool.close()
        final = await self._assemble(principal, chunk)
        if final is None:
            return JSONResponse({"chunk": chunk.number, "size": chunk.size})
        url = self.locate(request, final.id)
        return JSONResponse({"url": url, "size": final.length, "sha256": final.sha256})

    async def _store(
        self, principal: Principal, chunk: FlowChunk, data: AsyncIterator[bytes]
    ) -> FlowChunk:
        """The chunk's bytes into its partial upload; a chunk held already is accepted again."""
        key = chunk.key(chunk.number)
        data = await judged_first(self.service, data, chunk.number == 1, chunk.filename)
        counted = Counted(data)
        if await self._assembled(principal, chunk) is not None:
            async for _ in counted:  # the whole file is here: nothing to keep
                pass
            return chunk
        upload = await self._fresh(principal, key, chunk.size)
        logs.tag(upload_id=upload.id)
        if upload.complete:
            async for _ in counted:
                pass
            return chunk
        try:
            upload = await self.service.append(upload.id, 0, aiter(counted), owner=principal.owner)
        except ExceedsLength:
            await self._drop(principal, upload.id)
            raise BadRequest(f"the chunk carries more than its {chunk.size} bytes") from None
        except TypeNotAllowed:
            await self._drop(principal, upload.id)
            raise
        if not upload.complete:
            await self._drop(principal, upload.id)
            raise BadRequest(f"the chunk carries {counted.size} of its {chunk.size} bytes")
        return chunk

    async def _fresh(self, principal: Principal, key: str, size: int) -> Upload:
        async def create() -> Upload:
            return await self.service.create(
                length=size,
                partial=True,
                owner=principal.owner,
                quota=principal.quota,
                idempotency_key=key,
            )

        try:
            upload = await create()
        except Gone:  # expired, or consumed by an earlier assembly
            await self.service.store.delete(keyed_upload_id(principal.owner, key))
            return await create()
        if upload.complete or upload.offset == 0:
            return upload
        await self._drop(principal, upload.id)  # half written by an interrupted request
        return await create()

    async def _drop(self, principal: Principal, upload_id: str) -> None:
        with contextlib.suppress(Gone):
            await self.service.terminate(upload_id, owner=principal.owner)
        await self.service.store.delete(upload_id)

    async def _assemble(self, principal: Principal, chunk: FlowChunk) -> Upload | None:
        """The whole file, once every chunk is held; None while some are still on their way."""
        done = await self._assembled(principal, chunk)
        if done is not None:
            return done
        ids = self._ids(principal, chunk)
        records = await self.service.store.get_many(ids)
        if any(not (r := records.get(i)) or not r.complete for i in ids):
            return None
        metadata = encode_metadata({"filename": chunk.filename.encode()})
        try:
            return await self.service.create_final(
                ids, metadata_raw=metadata, owner=principal.owner, quota=principal.quota
            )
        except (InvalidConcat, Gone):  # the last two chunks arrived at once: the other one
            return await self._assembled(principal, chunk)  # assembled the file
