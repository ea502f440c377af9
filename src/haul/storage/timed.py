"""Any storage, timed: every operation's duration reported to an observer (the metrics), so
an operator sees which backend call is slow. Wraps; changes nothing it passes on."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

from haul.core.interfaces import ChunkWriter, DirectUploads, InPlaceConcat, Storage

T = TypeVar("T")
Observe = Callable[[str, float], None]  # (operation, seconds)


class TimedWriter:
    def __init__(self, inner: ChunkWriter, observe: Observe) -> None:
        self._inner = inner
        self._observe = observe

    async def write(self, pieces: Sequence[bytes]) -> None:
        await _timed(self._observe, "write", self._inner.write(pieces))

    async def commit(self) -> int:
        return await _timed(self._observe, "commit", self._inner.commit())

    async def discard(self) -> None:
        await _timed(self._observe, "discard", self._inner.discard())


async def _timed(observe: Observe, operation: str, work: Awaitable[T]) -> T:
    started = time.perf_counter()
    try:
        return await work
    finally:
        observe(operation, time.perf_counter() - started)


class TimedStorage:
    def __init__(self, inner: Storage, observe: Observe) -> None:
        self.inner = inner
        self.observe = observe
        self.reads_while_writing = inner.reads_while_writing

    async def create(self, upload_id: str, length: int | None = None) -> None:
        await _timed(self.observe, "create", self.inner.create(upload_id, length))

    async def offset(self, upload_id: str) -> int:
        return await _timed(self.observe, "offset", self.inner.offset(upload_id))

    async def open_writer(self, upload_id: str, offset: int, *, atomic: bool) -> ChunkWriter:
        opening = self.inner.open_writer(upload_id, offset, atomic=atomic)
        return TimedWriter(await _timed(self.observe, "open_writer", opening), self.observe)

    async def concatenate(self, upload_id: str, part_ids: Sequence[str]) -> None:
        await _timed(self.observe, "concatenate", self.inner.concatenate(upload_id, part_ids))

    async def share(self, source_id: str, upload_id: str) -> bool:
        return await _timed(self.observe, "share", self.inner.share(source_id, upload_id))

    async def finish(self, upload_id: str) -> None:
        await _timed(self.observe, "finish", self.inner.finish(upload_id))

    async def read(self, upload_id: str, start: int, end: int) -> AsyncIterator[bytes]:
        started = time.perf_counter()  # a read's time is the whole stream's
        try:
            async for block in self.inner.read(upload_id, start, end):
                yield block
        finally:
            self.observe("read", time.perf_counter() - started)

    async def delete(self, upload_id: str) -> None:
        await _timed(self.observe, "delete", self.inner.delete(upload_id))

    def stored_ids(self) -> AsyncIterator[tuple[str, float]]:
        return self.inner.stored_ids()

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()


class TimedDirectStorage(TimedStorage):
    """The same for a storage that also takes presigned direct uploads."""

    def __init__(self, inner: Storage, observe: Observe) -> None:
        assert isinstance(inner, DirectUploads)
        super().__init__(inner, observe)
        self.direct: DirectUploads = inner

    async def multipart_id(self, upload_id: str) -> str | None:
        return await _timed(self.observe, "multipart_id", self.direct.multipart_id(upload_id))

    async def presign_part(
        self, upload_id: str, part_number: int, ttl: int, *, md5: str | None = None
    ) -> str:
        signing = self.direct.presign_part(upload_id, part_number, ttl, md5=md5)
        return await _timed(self.observe, "presign_part", signing)

    async def list_parts(self, upload_id: str) -> list[dict[str, object]]:
        return await _timed(self.observe, "list_parts", self.direct.list_parts(upload_id))

    async def complete_parts(self, upload_id: str, parts: Sequence[tuple[int, str]]) -> int:
        completing = self.direct.complete_parts(upload_id, parts)
        return await _timed(self.observe, "complete_parts", completing)


class TimedPlacingStorage(TimedDirectStorage):
    """The same for a storage that also places partials into their final upload (S3)."""

    def __init__(self, inner: Storage, observe: Observe) -> None:
        assert isinstance(inner, InPlaceConcat)
        super().__init__(inner, observe)
        self.placing: InPlaceConcat = inner

    async def place(
        self, part_name: str, final_name: str, layout: Sequence[int], index: int
    ) -> bool:
        placing = self.placing.place(part_name, final_name, layout, index)
        return await _timed(self.observe, "place", placing)


def timed(storage: Storage, observe: Observe) -> Storage:
    if isinstance(storage, DirectUploads) and isinstance(storage, InPlaceConcat):
        return TimedPlacingStorage(storage, observe)
    if isinstance(storage, DirectUploads):
        return TimedDirectStorage(storage, observe)
    return TimedStorage(storage, observe)
