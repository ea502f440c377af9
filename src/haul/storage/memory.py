"""Upload bytes in memory: for tests and throwaway servers. Passes the same conformance suite
as the disk and S3 backends. Shared and concatenated uploads share the stored blocks (bytes
are immutable), so instant uploads cost no copy here either."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from haul.core.interfaces import StoredBytesMissing
from haul.errors import OffsetMismatch


@dataclass
class _Blob:
    blocks: list[bytes] = field(default_factory=list)
    size: int = 0
    changed: float = field(default_factory=time.time)

    def append(self, block: bytes) -> None:
        self.blocks.append(block)
        self.size += len(block)
        self.changed = time.time()

    def truncate(self, size: int) -> None:
        kept: list[bytes] = []
        total = 0
        for block in self.blocks:
            if total >= size:
                break
            block = block[: size - total]
            kept.append(block)
            total += len(block)
        self.blocks, self.size, self.changed = kept, total, time.time()


class MemoryWriter:
    def __init__(self, blob: _Blob, atomic: bool) -> None:
        self._blob = blob
        self._start = blob.size
        self._atomic = atomic
        self._pending: list[bytes] = []
        self._closed = False

    async def write(self, pieces: Sequence[bytes]) -> None:
        # The pieces may be views of a buffer the receiver reuses: keep copies.
        block = b"".join(pieces)
        if self._atomic:
            self._pending.append(block)
        else:  # what reached the storage counts at once, as on disk
            self._blob.append(block)

    async def commit(self) -> int:
        for block in self._pending:
            self._blob.append(block)
        self._pending.clear()
        self._closed = True
        return self._blob.size

    async def discard(self) -> None:
        if self._closed:  # as on disk: once committed or discarded, the writer is done
            return
        self._closed = True
        self._pending.clear()
        self._blob.truncate(self._start)


class MemoryStorage:
    reads_while_writing = True

    def __init__(self) -> None:
        self._blobs: dict[str, _Blob] = {}

    def _blob(self, upload_id: str) -> _Blob:
        blob = self._blobs.get(upload_id)
        if blob is None:
            raise StoredBytesMissing(f"upload {upload_id} has no stored bytes")
        return blob

    async def create(self, upload_id: str, length: int | None = None) -> None:
        self._blobs.setdefault(upload_id, _Blob())

    async def offset(self, upload_id: str) -> int:
        blob = self._blobs.get(upload_id)
        return blob.size if blob else 0

    async def open_writer(self, upload_id: str, offset: int, *, atomic: bool) -> MemoryWriter:
        blob = self._blobs.setdefault(upload_id, _Blob())
        if blob.size != offset:
            raise OffsetMismatch(f"the upload's offset is {blob.size}, the request says {offset}")
        return MemoryWriter(blob, atomic)

    async def concatenate(self, upload_id: str, part_ids: Sequence[str]) -> None:
        whole = _Blob()
        for part_id in part_ids:  # every part is checked before anything changes
            for block in self._blob(part_id).blocks:
                whole.append(block)
        self._blobs[upload_id] = whole

    async def share(self, source_id: str, upload_id: str) -> bool:
        source = self._blobs.get(source_id)
        if source is None:
            return False
        self._blobs[upload_id] = _Blob(list(source.blocks), source.size)
        return True

    async def finish(self, upload_id: str) -> None:
        """Readable as it grows: nothing to do."""

    async def read(self, upload_id: str, start: int, end: int) -> AsyncIterator[bytes]:
        blocks = list(self._blob(upload_id).blocks)  # a snapshot: writes may go on meanwhile
        base = 0
        for block in blocks:
            first, last = max(start, base), min(end, base + len(block))
            if first < last:
                yield block[first - base : last - base]
            base += len(block)

    async def delete(self, upload_id: str) -> None:
        self._blobs.pop(upload_id, None)

    async def stored_ids(self) -> AsyncIterator[tuple[str, float]]:
        for upload_id, blob in list(self._blobs.items()):
            yield upload_id, blob.changed

    async def open(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to release."""
