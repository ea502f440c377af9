"""Uploading one file: sequentially, or as parallel partial uploads joined by concatenation.

Sending starts at once. The whole-file SHA-256 is computed alongside, in a thread of its own
(client/instant.py), and is only needed at the end: the request that completes a sequential
upload declares it, and so does a parallel upload's final. When it is ready, the instant-upload
check runs; if the server already holds the content, the transfer stops there and the upload
completes without the rest of its bytes. Memory stays at ``parallel`` chunks (one for a
sequential upload, plus the next one being read) whatever the file size.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from haul.client.errors import HaulClientError, NotSupported, UploadGone
from haul.client.headers import format_repr_digest
from haul.client.instant import WholeFileHash, confirm, discard, probe
from haul.client.parallel import DigestReady, send_parallel
from haul.client.retry import Transient
from haul.client.session import Capabilities, Session
from haul.client.state import FileIdentity, StateStore, UploadEntry
from haul.client.transfer import REQUEST, Progress, ProgressCallback, Rewind, Transfer

__all__ = [
    "FileUpload",
    "Progress",
    "ProgressCallback",
    "UploadOptions",
    "UploadResult",
    "choose_chunk_size",
]

MiB = 1 << 20
MIN_CHUNK = 8 * MiB
MAX_CHUNK = 64 * MiB
TARGET_PARTS = 1000  # keeps the final upload's Upload-Concat header around 40 KB at most


@dataclass
class UploadResult:
    url: str
    path: Path
    size: int
    sha256: str  # of the local file, computed while it was being sent
    parallel: int  # streams used (1 = one sequential upload)
    resumed: bool  # continued an upload started earlier
    sent: int  # body bytes sent in this run
    elapsed: float
    instant: bool = False  # the server already had the content: the transfer stopped early
    # The server verifies the declared SHA-256 in the background (its object store): the upload
    # is complete, and fails later should the stored bytes not hash to it.
    digest_pending: bool = False


@dataclass
class UploadOptions:
    parallel: int = 4
    chunk_size: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    resume: bool = True
    dedup: bool = True  # once the hash is known, try an instant upload


def choose_chunk_size(size: int, requested: int | None) -> int:
    """Adapt the chunk to the file: about TARGET_PARTS chunks, a multiple of 8 MiB within
    [8 MiB, 64 MiB]. A server on object storage writes each partial in place as parts of the
    final object when every partial but the last is a whole number of its parts (S3's are
    at least 5 MiB; haul's are 8 MiB)."""
    if requested:
        return max(1, requested)
    return _in_units(size / TARGET_PARTS, MAX_CHUNK)


def choose_partial_size(size: int, parallel: int, requested: int | None) -> int:
    """A parallel upload's partial: one per stream, each sent as a sequential upload is (large
    PATCHes streamed from the file). Every partial costs the server a creation, a placement
    and a retirement, and every request's end drains its pipeline of parts to the store."""
    if requested:
        return max(1, requested)
    # Whole multiples of MIN_CHUNK, so a server on object storage can write them in place.
    return max(choose_chunk_size(size, None), math.ceil(size / parallel / MIN_CHUNK) * MIN_CHUNK)


def _in_units(wanted: float, most: int) -> int:
    """``wanted`` rounded up to a multiple of MIN_CHUNK, within [MIN_CHUNK, most]."""
    return min(most, max(MIN_CHUNK, math.ceil(wanted / MIN_CHUNK) * MIN_CHUNK))


class FileUpload(Transfer):
    def __init__(
        self,
        session: Session,
        endpoint: str,
        path: Path,
        options: UploadOptions,
        state: StateStore,
        on_progress: ProgressCallback | None,
    ) -> None:
        super().__init__(session, endpoint, path, state, on_progress, options.metadata)
        self.options = options

    # -- entry point ----------------------------------------------------------------------

    async def run(self) -> UploadResult:
        started = time.monotonic()
        caps = await self.session.capabilities(self.endpoint)
        identity = await asyncio.to_thread(FileIdentity.of, self.path)
        size = self.size = identity.size
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
            if use_parallel:
                chunk = choose_partial_size(size, parallel, self.options.chunk_size)
            elif not self.options.chunk_size:
                chunk = max(chunk, REQUEST)  # streamed from the file: no memory cost
            count = math.ceil(size / chunk) if use_parallel else 1
            entry = UploadEntry(self.endpoint, identity, chunk, [None] * count, use_parallel)
        elif entry.parallel and "concatenation" not in caps.extensions:
            raise NotSupported("the saved upload used concatenation, which the server lost")
        self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        hashing = WholeFileHash(self.path, size)
        check: asyncio.Task[str | None] | None = None
        if self.options.dedup and size and not resumed:
            check = asyncio.create_task(self._instant_check(hashing))

        async def digest_ready() -> str:
            self.began.set()  # the transfer can go no further without it: check now
            if check is not None:  # an instant upload would end the transfer instead
                await asyncio.shield(check)
            return await hashing.result()

        streams = max(1, parallel) if entry.parallel else 1
        transfer = asyncio.create_task(self._transfer(key, entry, caps, streams, digest_ready))
        try:
            if check is not None:
                await asyncio.wait({check, transfer}, return_when=asyncio.FIRST_COMPLETED)
                if check.done() and check.exception() is None and check.result() is not None:
                    return await self._instant(key, entry, transfer, check, hashing, started)
            url = await transfer
            digest = await hashing.result()
        finally:
            for task in (transfer, check):
                if task is not None and not task.done():
                    task.cancel()
            await asyncio.gather(*(t for t in (transfer, check) if t), return_exceptions=True)
            await hashing.stop()
            os.close(self.fd)
        pending = await confirm(self, url, digest)
        self.state.remove(key)
        return UploadResult(
            url=url,
            path=self.path,
            size=size,
            sha256=digest,
            parallel=streams,
            resumed=resumed,
            sent=self.sent_bytes,
            elapsed=time.monotonic() - started,
            digest_pending=pending,
        )

    async def _transfer(
        self, key: str, entry: UploadEntry, caps: Capabilities, streams: int, ready: DigestReady
    ) -> str:
        if entry.parallel:
            return await send_parallel(self, key, entry, caps, streams, ready)
        return await self._sequential(key, entry, caps, ready)

    async def _instant_check(self, hashing: WholeFileHash) -> str | None:
        digest = await hashing.result()
        await self.began.wait()
        try:
            return await probe(self, digest)
        except (HaulClientError, Transient):  # an optional shortcut: the transfer goes on
            return None

    async def _instant(
        self,
        key: str,
        entry: UploadEntry,
        transfer: asyncio.Task[str],
        check: asyncio.Task[str | None],
        hashing: WholeFileHash,
        started: float,
    ) -> UploadResult:
        """The server holds the content: stop sending, remove what was sent, and finish."""
        url = check.result()
        assert url is not None
        transfer.cancel()
        await asyncio.gather(transfer, return_exceptions=True)
        if entry.final is not None:  # first: it holds its partials
            await discard(self, [entry.final])
        await discard(self, [u for u in entry.parts if u is not None])
        digest = await hashing.result()
        pending = await confirm(self, url, digest)
        self.state.remove(key)
        return UploadResult(url, self.path, self.size, digest, 1, False, self.sent_bytes,
                            time.monotonic() - started, instant=True,
                            digest_pending=pending)  # fmt: skip

    # -- sequential -----------------------------------------------------------------------

    async def _sequential(
        self, key: str, entry: UploadEntry, caps: Capabilities, digest_ready: DigestReady
    ) -> str:
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
            url, _ = await self.create(size, self.metadata(), partial=False,
                                       extra=empty if size == 0 else None)  # fmt: skip
            entry.parts[0] = url
            await self.save(key, entry)
        algorithm = caps.checksum_algorithm()
        if size == 0:
            await self.send(url, 0, b"", server_offset, 0, algorithm)
            return url
        while True:
            try:
                await self.send_file(url, 0, server_offset, size, algorithm, entry.chunk_size,
                                     last=lambda: self._declaration(digest_ready))  # fmt: skip
                return url
            except Rewind as rewind:
                server_offset = rewind.offset

    async def _declaration(self, digest_ready: DigestReady) -> dict[str, str]:
        """The request that completes the upload declares the whole-file digest."""
        return {"Repr-Digest": format_repr_digest(await digest_ready())}
