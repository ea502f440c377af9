"""Uploading one file: sequentially, or as parallel partial uploads joined by concatenation.

The file is read once, in order: every block feeds the whole-file SHA-256 and the per-request
checksum, so no second pass over the file is needed. In parallel mode each chunk becomes its own
partial upload; chunks are read and hashed in file order while up to ``parallel`` of them are
on the wire, so memory stays at ``parallel`` chunks whatever the file size.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import math
import mimetypes
import os
import secrets
import time
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

from haul.client.errors import HaulClientError, NotSupported, ServerRejected, UploadGone
from haul.client.headers import (
    encode_metadata,
    format_repr_digest,
    header_int,
    reported_sha256,
    required_header,
    required_int,
)
from haul.client.retry import Transient
from haul.client.session import Capabilities, Session
from haul.client.state import FileIdentity, StateStore, UploadEntry
from haul.wire.possession import Challenge, answer

MiB = 1 << 20
MIN_CHUNK = 8 * MiB
MAX_CHUNK = 64 * MiB
TARGET_PARTS = 1000  # keeps the final upload's Upload-Concat header around 40 KB at most
SEND_SLICE = 256 * 1024
OCTETS = "application/offset+octet-stream"


@dataclass(frozen=True)
class Progress:
    path: Path
    sent: int  # bytes the server has or is receiving (while hashing: bytes hashed)
    total: int
    phase: str = "uploading"  # or "hashing", before an instant-upload attempt


ProgressCallback = Callable[[Progress], None]


@dataclass
class UploadResult:
    url: str
    path: Path
    size: int
    sha256: str  # of the local file, computed while reading it
    parallel: int  # streams used (1 = one sequential upload)
    resumed: bool  # continued an upload started earlier
    sent: int  # body bytes sent in this run
    elapsed: float
    instant: bool = False  # the server already had the content: no byte was sent


@dataclass
class UploadOptions:
    parallel: int = 4
    chunk_size: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    resume: bool = True
    dedup: bool = True  # hash first and try an instant upload


def choose_chunk_size(size: int, requested: int | None) -> int:
    """Adapt the chunk to the file: about TARGET_PARTS chunks, within [8 MiB, 64 MiB]."""
    if requested:
        return max(1, requested)
    wanted = math.ceil(size / TARGET_PARTS)
    return min(MAX_CHUNK, max(MIN_CHUNK, math.ceil(wanted / MiB) * MiB))


def _checksum(algorithm: str, data: memoryview) -> str:
    if algorithm == "crc32":
        raw = zlib.crc32(data).to_bytes(4, "big")
    else:
        raw = hashlib.new(algorithm, data).digest()
    return f"{algorithm} {base64.b64encode(raw).decode()}"


class _OrderedHash:
    """SHA-256 of the whole file, fed by chunks that may be read concurrently but are hashed
    strictly in file order."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self._next = 0
        self._turn = asyncio.Condition()

    async def feed(self, index: int, data: bytes) -> None:
        async with self._turn:
            await self._turn.wait_for(lambda: self._next == index)
            await asyncio.to_thread(self.digest.update, data)
            self._next += 1
            self._turn.notify_all()


class _Rewind(Exception):
    """The server holds fewer bytes than it acknowledged before (it lost unsynced data)."""

    def __init__(self, offset: int) -> None:
        super().__init__(offset)
        self.offset = offset


class FileUpload:
    def __init__(
        self,
        session: Session,
        endpoint: str,
        path: Path,
        options: UploadOptions,
        state: StateStore,
        on_progress: ProgressCallback | None,
    ) -> None:
        self.session = session
        self.endpoint = endpoint
        self.path = path
        self.options = options
        self.state = state
        self.on_progress = on_progress
        self.sent_bytes = 0
        self._progress: dict[int, int] = {}
        self._save_lock = asyncio.Lock()
        self._fd = -1
        self._size = 0
        self._known_digest: str | None = None  # from the hashing pass before an instant upload

    # -- entry point ----------------------------------------------------------------------

    async def run(self) -> UploadResult:
        started = time.monotonic()
        caps = await self.session.capabilities(self.endpoint)
        identity = await asyncio.to_thread(FileIdentity.of, self.path)
        size = self._size = identity.size
        if caps.max_size is not None and size > caps.max_size:
            raise NotSupported(
                f"{self.path} is {size} bytes; the server takes at most {caps.max_size}"
            )
        key = identity.key(self.endpoint)
        entry = self.state.load(key) if self.options.resume else None
        resumed = entry is not None
        chunk = choose_chunk_size(size, self.options.chunk_size)
        parallel = self.options.parallel if "concatenation" in caps.extensions else 1
        if entry is None:
            use_parallel = parallel > 1 and size > chunk
            count = math.ceil(size / chunk) if use_parallel else 1
            entry = UploadEntry(self.endpoint, identity, chunk, [None] * count, use_parallel)
        elif entry.parallel and "concatenation" not in caps.extensions:
            raise NotSupported("the saved upload used concatenation, which the server lost")
        self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if self.options.dedup and size and not resumed:
                digest = self._known_digest = await self._hash_file()
                instant = await self._probe(key, entry, digest)
                if instant is not None:
                    await self._confirm(instant, digest)
                    return UploadResult(instant, self.path, size, digest, 1, False, 0,
                                        time.monotonic() - started, instant=True)  # fmt: skip
            if entry.parallel:
                url, digest = await self._parallel(key, entry, caps, max(1, parallel))
            else:
                url, digest = await self._sequential(key, entry, caps)
        finally:
            os.close(self._fd)
        await self._confirm(url, digest)
        self.state.remove(key)
        return UploadResult(
            url=url,
            path=self.path,
            size=size,
            sha256=digest,
            parallel=max(1, parallel) if entry.parallel else 1,
            resumed=resumed,
            sent=self.sent_bytes,
            elapsed=time.monotonic() - started,
        )

    # -- sequential -----------------------------------------------------------------------

    async def _sequential(
        self, key: str, entry: UploadEntry, caps: Capabilities
    ) -> tuple[str, str]:
        size = entry.identity.size
        url = entry.parts[0]
        server_offset = 0
        if url is not None:
            try:
                server_offset, _ = await self.session.offset(url)
            except UploadGone:
                url = None
        if url is None:
            empty = {"Repr-Digest": format_repr_digest(hashlib.sha256().hexdigest())}
            url, _ = await self._create(size, self._metadata(), partial=False,
                                     extra=empty if size == 0 else None)  # fmt: skip
            entry.parts[0] = url
            await self._save(key, entry)
        algorithm = caps.checksum_algorithm()
        while True:
            try:
                digest = hashlib.sha256()

                async def prepare(at: int, digest: hashlib._Hash = digest) -> bytes:
                    data = await self._read(at, min(entry.chunk_size, size - at))
                    if self._known_digest is None:
                        await asyncio.to_thread(digest.update, data)
                    return data

                position = 0
                self._progress.clear()
                upcoming = asyncio.create_task(prepare(0)) if size else None
                while upcoming is not None:
                    data = await upcoming
                    # Read and hash the next chunk while this one is on the wire.
                    after = position + len(data)
                    upcoming = asyncio.create_task(prepare(after)) if after < size else None
                    # Progress is kept per chunk, keyed by where the chunk starts.
                    done = max(server_offset, position)
                    # The request that completes the upload declares the whole-file digest,
                    # known by now because every chunk was hashed before it was sent.
                    extra = None
                    if after == size:
                        whole = self._known_digest or digest.hexdigest()
                        extra = {"Repr-Digest": format_repr_digest(whole)}
                    try:
                        await self._send(url, position, data, done, position, algorithm, extra)
                    except BaseException:
                        if upcoming is not None:
                            upcoming.cancel()
                        raise
                    server_offset = max(server_offset, after)
                    position = after
                if size == 0:
                    await self._send(url, 0, b"", server_offset, 0, algorithm)
                return url, self._known_digest or digest.hexdigest()
            except _Rewind as rewind:
                server_offset = rewind.offset

    # -- parallel -------------------------------------------------------------------------

    async def _parallel(
        self, key: str, entry: UploadEntry, caps: Capabilities, parallel: int
    ) -> tuple[str, str]:
        size = entry.identity.size
        chunk = entry.chunk_size
        count = len(entry.parts)
        offsets = [0] * count
        limit = asyncio.Semaphore(parallel * 2)

        async def probe(index: int, url: str) -> None:
            async with limit:
                try:
                    offsets[index], _ = await self.session.offset(url)
                except UploadGone:
                    entry.parts[index] = None

        await asyncio.gather(*(probe(i, u) for i, u in enumerate(entry.parts) if u is not None))
        ordered = _OrderedHash()
        algorithm = caps.checksum_algorithm()
        indexes = iter(range(count))
        # Each partial says where it belongs, so the server can hash the file while it arrives.
        group = secrets.token_urlsafe(12)

        async def worker() -> None:
            for index in indexes:
                start = index * chunk
                data = await self._read(start, min(chunk, size - start))
                if self._known_digest is None:
                    await ordered.feed(index, data)
                url = entry.parts[index]
                if url is None:
                    tag = encode_metadata({"haul-part": f"{group} {index}".encode()})
                    url, _ = await self._create(len(data), tag, partial=True)
                    entry.parts[index] = url
                    await self._save(key, entry)
                    offsets[index] = 0
                try:
                    await self._send(url, 0, data, offsets[index], index, algorithm)
                except _Rewind as rewind:
                    offsets[index] = rewind.offset
                    await self._send(url, 0, data, rewind.offset, index, algorithm)

        tasks = [asyncio.create_task(worker()) for _ in range(min(parallel, count))]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        parts = " ".join(self._same_origin_path(u) for u in entry.parts if u is not None)
        whole = self._known_digest or ordered.digest.hexdigest()
        headers = {"Upload-Concat": f"final;{parts}", "Repr-Digest": format_repr_digest(whole)}
        metadata = self._metadata()
        if metadata:
            headers["Upload-Metadata"] = metadata
        response = await self.session.request("POST", self.endpoint, headers=headers, ok=(201,))
        return urljoin(self.endpoint, required_header(response, "location")), whole

    async def _hash_file(self) -> str:
        digest = hashlib.sha256()
        position = 0
        while position < self._size:
            block = await self._read(position, min(MIN_CHUNK, self._size - position))
            await asyncio.to_thread(digest.update, block)
            position += len(block)
            if self.on_progress is not None:
                self.on_progress(Progress(self.path, position, self._size, "hashing"))
        return digest.hexdigest()

    async def _probe(self, key: str, entry: UploadEntry, digest: str) -> str | None:
        """Create the upload declaring its digest: the server answers with a complete upload
        when it already holds the content (instant upload). Otherwise a sequential upload goes
        on with it; a parallel one removes it and uses partial uploads."""
        extra = {"Repr-Digest": format_repr_digest(digest)}
        url, answer = await self._create(self._size, self._metadata(), partial=False, extra=extra)
        offset = header_int(answer, "upload-offset") or 0
        challenge = answer.headers.get("haul-challenge")
        if offset != self._size and challenge is not None:
            offset = await self._prove(url, challenge)
        if offset == self._size:
            return url
        if entry.parallel:
            with contextlib.suppress(HaulClientError):
                await self.session.request("DELETE", url, ok=(204,))
        else:
            entry.parts[0] = url
            await self._save(key, entry)
        return None

    async def _prove(self, url: str, header: str) -> int:
        """Answer the server's proof-of-possession challenge; returns the upload's offset."""
        try:
            challenge = Challenge.parse_header(header)
            blocks = [await self._read(first, last - first + 1) for first, last in challenge.ranges]
        except (ValueError, HaulClientError):
            return 0  # a challenge we cannot answer: send the bytes instead
        proof = base64.b64encode(answer(challenge.nonce, blocks)).decode()
        headers = {"Upload-Offset": "0", "Content-Type": OCTETS, "Haul-Proof": proof}
        try:
            response = await self.session.request("PATCH", url, headers=headers, ok=(204,))
        except ServerRejected:
            return 0
        return header_int(response, "upload-offset") or 0

    async def _confirm(self, url: str, digest: str) -> None:
        """End-to-end check: a server that reports the digest of what it stored (haul does, as
        Repr-Digest) must report ours."""
        response = await self.session.request("HEAD", url)
        stored = reported_sha256(response.headers.get("repr-digest"))
        # None: a server that does not say; per-request checksums guarded the transfer.
        if stored is not None and stored != digest:
            raise HaulClientError(
                f"the server stored sha-256 {stored} for {self.path}, which hashes to {digest}"
            )

    # -- requests -------------------------------------------------------------------------

    async def _create(
        self, length: int, metadata: str | None, *, partial: bool,
        extra: dict[str, str] | None = None,
    ) -> tuple[str, httpx.Response]:  # fmt: skip
        """Create an upload; its URL, and the server's answer."""
        headers = {"Upload-Length": str(length), **(extra or {})}
        if metadata:
            headers["Upload-Metadata"] = metadata
        if partial:
            headers["Upload-Concat"] = "partial"
        # Retries of this POST carry the same key: a lost answer costs no second upload.
        headers["Idempotency-Key"] = f'"{secrets.token_urlsafe(18)}"'
        response = await self.session.request("POST", self.endpoint, headers=headers, ok=(201,))
        return urljoin(self.endpoint, required_header(response, "location")), response

    async def _send(
        self,
        url: str,
        start: int,
        data: bytes,
        server_offset: int,
        index: int,
        algorithm: str | None,
        extra: dict[str, str] | None = None,
    ) -> None:
        """PATCH ``data`` (which begins at upload offset ``start``) from ``server_offset`` on.
        After a failed PATCH the server is asked with HEAD how much it holds, and the next
        attempt sends from there; each PATCH that succeeds renews the retry budget."""
        end = start + len(data)
        at = server_offset

        async def attempt() -> int:
            if at >= end:  # the failed attempt's bytes had reached the server after all
                return at
            piece = memoryview(data)[at - start :]
            headers = {
                "Upload-Offset": str(at),
                "Content-Type": OCTETS,
                "Content-Length": str(len(piece)),
                **(extra or {}),
            }
            if algorithm:
                headers["Upload-Checksum"] = await asyncio.to_thread(_checksum, algorithm, piece)
            base = at - start
            self._report(index, base)
            response = await self.session.once(
                "PATCH", url, headers=headers, body=self._body(piece, index, base), ok=(204,)
            )
            offset = required_int(response, "upload-offset")
            if offset <= at:  # it would be sent again and again
                raise HaulClientError(f"PATCH {url} was accepted but left Upload-Offset at {at}")
            return offset

        async def resync(failed: Transient) -> None:
            nonlocal at
            at, _ = await self.session.offset(url)
            if at < start:
                raise _Rewind(at) from failed

        while at < end:
            at = await self.session.policy.run(attempt, what=f"PATCH {url}", between=resync)
        self._report(index, len(data))

    def _body(self, piece: memoryview, index: int, base: int) -> Callable[[], AsyncIterator[bytes]]:
        async def stream() -> AsyncIterator[bytes]:
            done = 0
            for at in range(0, len(piece), SEND_SLICE):
                block = bytes(piece[at : at + SEND_SLICE])
                yield block
                done += len(block)
                self.sent_bytes += len(block)
                self._report(index, base + done)

        return stream

    # -- helpers --------------------------------------------------------------------------

    async def _read(self, offset: int, length: int) -> bytes:
        data = await asyncio.to_thread(os.pread, self._fd, length, offset)
        if len(data) != length:
            raise HaulClientError(f"{self.path} changed while it was being uploaded")
        return data

    async def _save(self, key: str, entry: UploadEntry) -> None:
        async with self._save_lock:
            await asyncio.to_thread(self.state.save, key, entry)

    def _report(self, index: int, done: int) -> None:
        self._progress[index] = done
        if self.on_progress is not None:
            sent = sum(self._progress.values())
            self.on_progress(Progress(self.path, sent, self._size))

    def _metadata(self) -> str:
        values = {"filename": self.path.name}
        guessed, _ = mimetypes.guess_type(self.path.name)
        if guessed:
            values["filetype"] = guessed
        values.update(self.options.metadata)
        return encode_metadata({k: v.encode() for k, v in values.items()})

    def _same_origin_path(self, url: str) -> str:
        here, there = urlsplit(self.endpoint), urlsplit(url)
        return there.path if (here.scheme, here.netloc) == (there.scheme, there.netloc) else url
