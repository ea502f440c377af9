"""What every way of sending one file shares: the open file, the requests that create uploads
and PATCH bytes (each guarded by its own checksum, resumed from the server's offset after a
failure), the saved resume state and the progress reported to the caller."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import mimetypes
import os
import secrets
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

from haul.client.errors import HaulClientError
from haul.client.headers import encode_metadata, required_header, required_int
from haul.client.retry import Transient
from haul.client.session import Session
from haul.client.state import StateStore, UploadEntry

SEND_SLICE = 256 * 1024
# The most one PATCH carries when sending from the file: large, as each one waits for its
# answer (and the server's commit), but small enough that a failed one costs little to resend.
REQUEST = 64 * 1024 * 1024
OCTETS = "application/offset+octet-stream"


@dataclass(frozen=True)
class Progress:
    path: Path
    sent: int  # bytes the server has or is receiving
    total: int
    phase: str = "uploading"


ProgressCallback = Callable[[Progress], None]


def checksum(algorithm: str, data: memoryview) -> str:
    if algorithm == "crc32":
        raw = zlib.crc32(data).to_bytes(4, "big")
    else:
        raw = hashlib.new(algorithm, data).digest()
    return f"{algorithm} {base64.b64encode(raw).decode()}"


READ_BLOCK = 1 << 20


class FileRange:
    """Bytes ``[start, start + length)`` of the open file, read while they are sent, so a large
    request never sits in memory. Its checksum (for Upload-Checksum) is a pass of its own over
    the range, which can run while the request before it is on the wire."""

    def __init__(self, transfer: Transfer, start: int, length: int) -> None:
        self.transfer = transfer
        self.start = start
        self.length = length
        self._first: asyncio.Task[str] | None = None

    def prepare(self, algorithm: str | None) -> None:
        """Start computing the whole range's checksum now, for the first attempt."""
        if algorithm and self._first is None:
            self._first = asyncio.ensure_future(asyncio.to_thread(self._checksum, algorithm, 0))

    def cancel(self) -> None:
        if self._first is not None:
            self._first.cancel()

    async def checksum(self, algorithm: str, skip: int) -> str:
        if skip == 0 and self._first is not None:
            return await asyncio.shield(self._first)
        return await asyncio.to_thread(self._checksum, algorithm, skip)

    def _checksum(self, algorithm: str, skip: int) -> str:
        crc, digest = 0, None if algorithm == "crc32" else hashlib.new(algorithm)
        buffer = bytearray(min(READ_BLOCK, self.length) or 1)
        view = memoryview(buffer)
        at, end = self.start + skip, self.start + self.length
        while at < end:
            got = os.preadv(self.transfer.fd, [view[: min(len(buffer), end - at)]], at)
            if got == 0:
                raise HaulClientError(f"{self.transfer.path} changed while it was being uploaded")
            if digest is None:
                crc = zlib.crc32(view[:got], crc)
            else:
                digest.update(view[:got])
            at += got
        raw = crc.to_bytes(4, "big") if digest is None else digest.digest()
        return f"{algorithm} {base64.b64encode(raw).decode()}"

    async def blocks(self, skip: int) -> AsyncIterator[bytes]:
        """The range from ``skip`` on, the next block read while this one is sent."""
        at, end = self.start + skip, self.start + self.length

        def read(position: int) -> asyncio.Task[bytes] | None:
            if position >= end:
                return None
            size = min(READ_BLOCK, end - position)
            return asyncio.ensure_future(self.transfer.read(position, size))

        upcoming = read(at)
        try:
            while upcoming is not None:
                block = await upcoming
                at += len(block)
                upcoming = read(at)
                yield block
        finally:
            if upcoming is not None:
                upcoming.cancel()


class Rewind(Exception):
    """The server holds fewer bytes than it acknowledged before (it lost unsynced data)."""

    def __init__(self, offset: int) -> None:
        super().__init__(offset)
        self.offset = offset


class Transfer:
    def __init__(
        self,
        session: Session,
        endpoint: str,
        path: Path,
        state: StateStore,
        on_progress: ProgressCallback | None,
        metadata: dict[str, str],
    ) -> None:
        self.session = session
        self.endpoint = endpoint
        self.path = path
        self.state = state
        self.on_progress = on_progress
        self.extra_metadata = metadata
        self.sent_bytes = 0
        self.size = 0
        self.fd = -1
        # Set once the first bytes go out (or the transfer needs the digest to send them):
        # the instant-upload check waits for it, so a server that refuses the transfer's
        # creation is asked once, and the check never delays the first byte.
        self.began = asyncio.Event()
        self._progress: dict[int, int] = {}
        self._save_lock = asyncio.Lock()

    async def read(self, offset: int, length: int) -> bytes:
        data = await asyncio.to_thread(os.pread, self.fd, length, offset)
        if len(data) != length:
            raise HaulClientError(f"{self.path} changed while it was being uploaded")
        return data

    async def save(self, key: str, entry: UploadEntry) -> None:
        async with self._save_lock:
            await asyncio.to_thread(self.state.save, key, entry)

    async def create(
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

    async def send(
        self,
        url: str,
        start: int,
        data: bytes | FileRange,
        server_offset: int,
        index: int,
        algorithm: str | None,
        extra: dict[str, str] | None = None,
    ) -> None:
        """PATCH ``data`` (bytes, or a range of the file, that begins at upload offset
        ``start``) from ``server_offset`` on. After a failed PATCH the server is asked with
        HEAD how much it holds, and the next attempt sends from there; each PATCH that
        succeeds renews the retry budget."""
        length = data.length if isinstance(data, FileRange) else len(data)
        end = start + length
        at = server_offset

        async def attempt() -> int:
            if at >= end:  # the failed attempt's bytes had reached the server after all
                return at
            base = at - start
            headers = {
                "Upload-Offset": str(at),
                "Content-Type": OCTETS,
                "Content-Length": str(end - at),
                **(extra or {}),
            }
            if isinstance(data, FileRange):
                if algorithm:
                    headers["Upload-Checksum"] = await data.checksum(algorithm, base)
                body = self._range_body(data, index, base)
            else:
                piece = memoryview(data)[base:]
                if algorithm:
                    headers["Upload-Checksum"] = await asyncio.to_thread(checksum, algorithm, piece)
                body = self._body(piece, index, base)
            self.report(index, base)
            self.began.set()
            response = await self.session.once("PATCH", url, headers=headers, body=body, ok=(204,))
            offset = required_int(response, "upload-offset")
            if offset <= at:  # it would be sent again and again
                raise HaulClientError(f"PATCH {url} was accepted but left Upload-Offset at {at}")
            return offset

        async def resync(failed: Transient) -> None:
            nonlocal at
            at, _ = await self.session.offset(url)
            if at < start:
                raise Rewind(at) from failed

        while at < end:
            at = await self.session.policy.run(attempt, what=f"PATCH {url}", between=resync)
        self.report(index, length)

    async def send_file(
        self,
        url: str,
        base: int,
        offset: int,
        length: int,
        algorithm: str | None,
        request: int,
        last: Callable[[], Awaitable[dict[str, str]]] | None = None,
        first: FileRange | None = None,
    ) -> None:
        """Send bytes ``[offset, length)`` of an upload that holds the file's ``[base, base +
        length)``: one PATCH per ``request`` bytes, each streamed from the file, the next one's
        checksum computed while the one before it is on the wire. ``last`` gives the headers
        of the request that ends the upload; ``first``, the first request's range if it was
        prepared earlier (request_range). Rewind if the server lost bytes it had taken."""
        for stale in [key for key in self._progress if base <= key < base + length]:
            del self._progress[stale]  # after a rewind, this range's progress starts afresh
        self.report(base, offset)  # what the server holds already

        def ahead(at: int) -> FileRange | None:
            return self.request_range(base, at, length, request, algorithm) if at < length else None

        fits = first is not None and (first.start, first.length) == (
            base + offset, min(request, length - offset))  # fmt: skip
        if first is not None and not fits:
            first.cancel()  # prepared for another offset
        current = first if fits else ahead(offset)
        try:
            while current is not None:
                at = current.start - base
                following = ahead(at + current.length)
                extra = await last() if last is not None and following is None else None
                try:
                    await self.send(url, at, current, at, current.start, algorithm, extra)
                finally:
                    current.cancel()
                current = following
        finally:
            if current is not None:
                current.cancel()

    def request_range(
        self, base: int, offset: int, length: int, request: int, algorithm: str | None
    ) -> FileRange:
        """The range of send_file()'s request from upload offset ``offset`` on, its checksum
        started now, so that it is ready by the time the request can go."""
        upcoming = FileRange(self, base + offset, min(request, length - offset))
        upcoming.prepare(algorithm)
        return upcoming

    def _body(self, piece: memoryview, index: int, base: int) -> Callable[[], AsyncIterator[bytes]]:
        async def stream() -> AsyncIterator[bytes]:
            done = 0
            for at in range(0, len(piece), SEND_SLICE):
                block = bytes(piece[at : at + SEND_SLICE])
                yield block
                done += len(block)
                self.sent_bytes += len(block)
                self.report(index, base + done)

        return stream

    def _range_body(
        self, data: FileRange, index: int, base: int
    ) -> Callable[[], AsyncIterator[bytes]]:
        async def stream() -> AsyncIterator[bytes]:
            done = base
            async for block in data.blocks(base):
                yield block
                done += len(block)
                self.sent_bytes += len(block)
                self.report(index, done)

        return stream

    def report(self, index: int, done: int) -> None:
        """Progress is kept per piece (``index``): the caller hears the sum."""
        self._progress[index] = done
        if self.on_progress is not None:
            sent = sum(self._progress.values())
            self.on_progress(Progress(self.path, sent, self.size))

    def metadata(self) -> str:
        values = {"filename": self.path.name}
        guessed, _ = mimetypes.guess_type(self.path.name)
        if guessed:
            values["filetype"] = guessed
        values.update(self.extra_metadata)
        return encode_metadata({k: v.encode() for k, v in values.items()})

    def same_origin_path(self, url: str) -> str:
        here, there = urlsplit(self.endpoint), urlsplit(url)
        return there.path if (here.scheme, here.netloc) == (there.scheme, there.netloc) else url
