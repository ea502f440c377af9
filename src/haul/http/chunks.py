"""The design note's chunk API on the same core as tus:

    POST /upload-chunk  multipart: chunk (file), index (0-based), fileHash, chunkHash?,
                        totalChunks?, fileName?          -> {"index", "size"}
    GET  /exist?fileHash=H                               -> {"exists", "url", "uploadedChunks"}
                        (exists: the caller holds this content already: merged from
                        chunks under this fileHash, or, for a SHA-256, uploaded any way)
    POST /merge         {"fileHash", "fileName", "totalChunks"?} -> {"url", "size", "sha256"}

Each chunk is a tus partial upload whose id is derived from (owner, fileHash, index), so any
node finds it without a table of its own; the merge is a final upload of the partials in index
order (joined without copying bytes), after the joined bytes were checked against fileHash
(MD5 for 32 hex digits, as SparkMD5 computes it; SHA-256 for 64)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import tempfile
from collections.abc import AsyncIterator, Callable
from typing import IO, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from haul.core.lifecycle import keyed_upload_id
from haul.core.models import Upload, UploadState
from haul.core.policy import SNIFF_BYTES, TypePolicy
from haul.core.pump import BodyInterrupted
from haul.core.service import UploadService
from haul.errors import BadRequest, DigestMismatch, Gone, TypeNotAllowed
from haul.http import logs
from haul.http.auth import Authenticator, Principal
from haul.http.body import request_body
from haul.http.form_stream import FormStream, Part, boundary_of
from haul.http.routing import ExactRoute
from haul.http.tus import RequestInterrupted, RequestTimeout
from haul.wire.tus import encode_metadata

_HASH = re.compile(r"[0-9a-f]{32}|[0-9a-f]{64}")
MAX_CHUNKS = 100_000
MAX_JSON = 64 * 1024
_PROBE = 100  # chunk records looked up at once when finding which chunks are held
_SPOOL_IN_MEMORY = 1024 * 1024
_FIELDS = ("index", "fileHash", "chunkHash", "totalChunks", "fileName")


def chunk_id(owner: str, file_hash: str, index: int) -> str:
    return keyed_upload_id(owner, f"chunk\0{file_hash}\0{index}")


def parse_file_hash(value: object) -> str:
    text = value.lower() if isinstance(value, str) else ""
    if not _HASH.fullmatch(text):
        raise BadRequest("fileHash must be an MD5 (32 hex digits) or SHA-256 (64) of the file")
    return text


def parse_count(value: object, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise BadRequest(f"{name} must be a whole number")
    text = str(value)
    if not text.isascii() or not text.isdigit() or not low <= int(text) <= MAX_CHUNKS - 1 + low:
        raise BadRequest(f"{name} must be a whole number from {low} to {MAX_CHUNKS - 1 + low}")
    return int(text)


class Counted:
    """A body passed on as it is, counted and MD5-hashed on the way."""

    def __init__(self, source: AsyncIterator[bytes]) -> None:
        self.source = source
        self.md5 = hashlib.md5()  # noqa: S324  (the note's chunkHash, not a secret)
        self.size = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for piece in self.source:
            self.md5.update(piece)
            self.size += len(piece)
            yield piece


class Sniffed:
    """A file's first chunk passed on as it is, its first bytes judged by the type policy as
    soon as they are here: a refused kind is not stored beyond them. The rest of the body is
    still read (and dropped), so the client hears the refusal instead of a cut connection."""

    def __init__(self, source: AsyncIterator[bytes], policy: TypePolicy, name: str | None) -> None:
        self.source = source
        self.policy = policy
        self.name = name

    async def __aiter__(self) -> AsyncIterator[bytes]:
        head = bytearray()
        judged = not self.policy.active
        refused: TypeNotAllowed | None = None
        async for piece in self.source:
            if refused is not None:
                continue
            if not judged:
                head += piece[: SNIFF_BYTES - len(head)]
                if len(head) >= SNIFF_BYTES:
                    judged, refused = True, self._judge(bytes(head))
                    if refused is not None:
                        continue
            yield piece
        if not judged:
            refused = self._judge(bytes(head))
        if refused is not None:
            raise refused

    def _judge(self, head: bytes) -> TypeNotAllowed | None:
        try:
            self.policy.check_content(head, self.name, None)
        except TypeNotAllowed as refused:
            return refused
        return None


async def judged_first(
    service: UploadService, data: AsyncIterator[bytes], first: bool, name: str | None
) -> AsyncIterator[bytes]:
    """A chunk's bytes, judged as they arrive when they begin the file; the file's name judged
    before anything is stored."""
    if name:
        try:
            service.policy.check(name, None)
        except TypeNotAllowed:
            async for _ in data:  # read all the same, so the client hears the refusal
                pass
            raise
    return aiter(Sniffed(data, service.policy, name)) if first else data


async def spooled(data: AsyncIterator[bytes]) -> IO[bytes]:
    """A file part that came before the fields naming it: kept on disk (not in memory) until
    the rest of the form says where it belongs."""
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)  # noqa: SIM115
    async for piece in data:
        await asyncio.to_thread(spool.write, piece)
    spool.seek(0)
    return spool


async def replay(spool: IO[bytes]) -> AsyncIterator[bytes]:
    while block := await asyncio.to_thread(spool.read, _SPOOL_IN_MEMORY):
        yield block


async def nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover  (makes this an async generator)


class ChunkApi:
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
        self.prefix = prefix
        self.body_timeout = body_timeout
        self.min_speed = min_speed

    def routes(self) -> list[BaseRoute]:
        return [
            ExactRoute(self.prefix + "/upload-chunk", self.upload_chunk, methods=["POST"]),
            ExactRoute(self.prefix + "/exist", self.exist, methods=["GET"]),
            ExactRoute(self.prefix + "/merge", self.merge, methods=["POST"]),
        ]

    def _principal(self, request: Request) -> Principal:
        principal = self.auth.authenticate(request.headers.get("authorization"))
        logs.tag(owner=principal.owner)
        return principal

    # -- POST /upload-chunk ------------------------------------------------------------------

    async def upload_chunk(self, request: Request) -> Response:
        principal = self._principal(request)
        form = FormStream(
            request_body(request, self.body_timeout, self.min_speed),
            boundary_of(request.headers.get("content-type")),
        )
        fields: dict[str, str] = {}
        written: tuple[str, Counted] | None = None
        spool: IO[bytes] | None = None
        try:
            async for part in form.parts():
                if part.name == "chunk":
                    if written is not None or spool is not None:
                        raise BadRequest("the form carries more than one chunk")
                    if "index" in fields and "fileHash" in fields:
                        written = await self._write(principal, fields, part.data)
                    else:
                        spool = await spooled(part.data)
                elif part.name in _FIELDS:
                    await self._field(fields, part)
            if written is None and spool is None:
                raise BadRequest("the form has no file part named chunk")
            if written is None:
                assert spool is not None
                written = await self._write(principal, fields, replay(spool))
        except BodyInterrupted as exc:
            error = RequestTimeout if exc.timed_out else RequestInterrupted
            raise error(str(exc), headers={"Connection": "close"}) from None
        finally:
            if spool is not None:
                spool.close()
        upload_id, counted = written
        size = await self._finish(principal, upload_id, counted, fields.get("chunkHash"))
        return JSONResponse({"index": int(fields["index"]), "size": size})

    @staticmethod
    async def _field(fields: dict[str, str], part: Part) -> None:
        if part.name in fields:
            raise BadRequest(f"the form field {part.name!r} is sent twice")
        fields[part.name] = (await part.text()).strip()

    async def _write(
        self, principal: Principal, fields: dict[str, str], data: AsyncIterator[bytes]
    ) -> tuple[str, Counted]:
        """The chunk's bytes into its partial upload (left open: its length is declared once
        the form is over and its chunkHash, wherever it came, has been checked)."""
        if "index" not in fields or "fileHash" not in fields:
            raise BadRequest("the form needs the fields index and fileHash")
        file_hash = parse_file_hash(fields["fileHash"])
        index = parse_count(fields["index"], "index", 0)
        if "totalChunks" in fields and index >= parse_count(
            fields["totalChunks"], "totalChunks", 1
        ):
            raise BadRequest("index must be less than totalChunks")
        key = f"chunk\0{file_hash}\0{index}"
        data = await judged_first(self.service, data, index == 0, fields.get("fileName"))
        upload = await self._fresh_chunk(principal, key)
        logs.tag(upload_id=upload.id)
        counted = Counted(data)
        if upload.complete:  # the same chunk again: accepted, the bytes already held
            async for _ in counted:
                pass
            return upload.id, counted
        try:
            await self.service.append(upload.id, 0, aiter(counted), owner=principal.owner)
        except TypeNotAllowed:
            await self._drop(principal, upload.id)
            raise
        return upload.id, counted

    async def _fresh_chunk(self, principal: Principal, key: str) -> Upload:
        """The chunk's partial upload: the one held when it is complete, else an empty one (a
        chunk an interrupted request left half written is started over: it is sent whole)."""

        async def create() -> Upload:
            return await self.service.create(
                length=None,
                partial=True,
                owner=principal.owner,
                quota=principal.quota,
                idempotency_key=key,
            )

        try:
            upload = await create()
        except Gone:  # expired or consumed by a merge: this is a new chunk under the old name
            await self.service.store.delete(keyed_upload_id(principal.owner, key))
            return await create()
        if upload.complete or upload.offset == 0:
            return upload
        await self._drop(principal, upload.id)
        return await create()

    async def _drop(self, principal: Principal, upload_id: str) -> None:
        """Nothing kept of the chunk: its bytes and its record, so its name is free again."""
        with contextlib.suppress(Gone):
            await self.service.terminate(upload_id, owner=principal.owner)
        await self.service.store.delete(upload_id)

    async def _finish(
        self, principal: Principal, upload_id: str, counted: Counted, chunk_hash: str | None
    ) -> int:
        if chunk_hash is not None and counted.md5.hexdigest() != chunk_hash.lower():
            upload = await self.service.status(upload_id, owner=principal.owner)
            if not upload.complete:
                await self._drop(principal, upload_id)
            raise BadRequest("the chunk does not match its chunkHash (MD5); nothing was kept")
        upload = await self.service.status(upload_id, owner=principal.owner)
        if upload.complete:
            return upload.length or 0
        upload = await self.service.append(
            upload_id, counted.size, nothing(), new_length=counted.size, owner=principal.owner
        )
        return upload.length or 0

    # -- GET /exist --------------------------------------------------------------------------

    async def exist(self, request: Request) -> Response:
        principal = self._principal(request)
        file_hash = parse_file_hash(request.query_params.get("fileHash"))
        held_already = await self._merged(principal.owner, file_hash)
        if held_already is None and len(file_hash) == 64:
            # A SHA-256 names the content however it came: tus, /flow, or a merge.
            held_already = await self.service.store.find_file(file_hash, principal.owner)
        if held_already is not None:
            url = self.locate(request, held_already.id)
            return JSONResponse({"exists": True, "url": url, "uploadedChunks": []})
        held = await self._held(principal.owner, file_hash)
        return JSONResponse({"exists": False, "url": None, "uploadedChunks": held})

    async def _merged(self, owner: str, file_hash: str) -> Upload | None:
        """The caller's upload merged from this file's chunks, if there is one."""
        first = chunk_id(owner, file_hash, 0)
        for final in await self.service.store.finals_listing(first):
            ours = final.owner == owner and final.state is UploadState.COMPLETE
            if ours and final.parts == tuple(
                chunk_id(owner, file_hash, i) for i in range(len(final.parts))
            ):
                return final
        return None

    async def _held(self, owner: str, file_hash: str, count: int | None = None) -> list[int]:
        """The indexes of the complete chunks held for this file, ascending: of the first
        ``count`` when it is known, else up to the first hundred indexes in a row not held."""
        held: list[int] = []
        for start in range(0, count or MAX_CHUNKS, _PROBE):
            stop = min(start + _PROBE, count or MAX_CHUNKS)
            ids = {chunk_id(owner, file_hash, i): i for i in range(start, stop)}
            records = await self.service.store.get_many(list(ids))
            if not records and count is None:
                break
            held += sorted(ids[r.id] for r in records.values() if r.owner == owner and r.complete)
        return held

    # -- POST /merge -------------------------------------------------------------------------

    async def merge(self, request: Request) -> Response:
        principal = self._principal(request)
        owner = principal.owner
        asked = await self._json(request)
        file_hash = parse_file_hash(asked.get("fileHash"))
        name = asked.get("fileName")
        if not isinstance(name, str) or not name or len(name) > 1024:
            raise BadRequest("fileName must be a file name of 1 to 1024 characters")
        total = asked.get("totalChunks")
        count = None if total is None else parse_count(total, "totalChunks", 1)
        merged = await self._merged(owner, file_hash)
        if merged is not None and count in (None, len(merged.parts)):
            return self._merged_answer(request, merged)
        held = await self._held(owner, file_hash, count)
        if count is None:
            count = held[-1] + 1 if held else 1
        missing = sorted(set(range(count)) - set(held))
        if missing:
            return JSONResponse(
                {"error": "ERR_CHUNKS_MISSING", "missing": missing}, status_code=409
            )
        ids = [chunk_id(owner, file_hash, i) for i in range(count)]
        actual = await self._joined_digest(ids, owner, len(file_hash) == 32)
        if actual != file_hash:
            for upload_id in ids:  # the client starts this file over
                await self._drop(principal, upload_id)
            raise DigestMismatch(f"the joined chunks hash to {actual}, not to fileHash")
        final = await self.service.create_final(
            ids,
            metadata_raw=encode_metadata({"filename": name.encode()}),
            owner=owner,
            expected_sha256=file_hash if len(file_hash) == 64 else None,
            quota=principal.quota,
        )
        logs.tag(upload_id=final.id)
        return self._merged_answer(request, final)

    def _merged_answer(self, request: Request, final: Upload) -> Response:
        url = self.locate(request, final.id)
        return JSONResponse({"url": url, "size": final.length, "sha256": final.sha256})

    async def _joined_digest(self, ids: list[str], owner: str, md5: bool) -> str:
        """The digest of the chunks' bytes in index order, read back from the storage."""
        digest = hashlib.md5() if md5 else hashlib.sha256()  # noqa: S324  (SparkMD5's)
        for upload_id in ids:
            _, stream = await self.service.open_download(upload_id, owner=owner)
            async for block in stream:
                await asyncio.to_thread(digest.update, block)
        return digest.hexdigest()

    @staticmethod
    async def _json(request: Request) -> dict[str, Any]:
        raw = bytearray()
        async for piece in request.stream():
            raw += piece
            if len(raw) > MAX_JSON:
                raise BadRequest(f"the JSON body is larger than {MAX_JSON} bytes")
        try:
            asked = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise BadRequest("the body must be a JSON object") from None
        if not isinstance(asked, dict):
            raise BadRequest("the body must be a JSON object")
        return asked
