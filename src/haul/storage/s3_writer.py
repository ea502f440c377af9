"""Appending to an unfinished S3 upload, pipelined: as soon as a part is full it is handed to a
background upload while the request's next bytes keep arriving, with at most ``parts_in_flight``
parts of one upload on their way at once. What is left when the request ends is the new tail,
kept inside the state object.

Memory: per upload, the part being filled plus at most ``parts_in_flight`` parts in flight
(K x part size); across the node, parts in flight take from one byte budget (``memory``): an
upload waits for room before sending one more, so the node's parts in flight never exceed the
budget (or one part, if larger). Waiting slows the request's reading, so its sender slows.
Part bodies are reused (PartBuffers): a fresh 8 MiB buffer costs its zeroing and a page fault
per page, which profiled at a tenth of the event loop's time.

The offset is what the state object says, and it is written only after the bytes it counts:
parts finish in any order, and a state lists only the unbroken run of finished parts, so it can
under-report but never over-report. A failed part fails the request; discarding cancels the
parts still in flight (a part that landed anyway is never listed, so S3 drops it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from haul.storage.s3_state import Part, S3State

if TYPE_CHECKING:
    from haul.storage.s3 import S3Storage


class ByteBudget:
    """Bytes of parts in flight across every upload of a node."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._waiting: list[asyncio.Future[None]] = []

    async def take(self, size: int) -> None:
        """Wait for room for ``size`` bytes. With nothing in flight on the node a part goes
        whatever its size (so a part larger than the budget still goes, and nobody waits
        for ever: while anything is in flight, it ends and makes room)."""
        while self.used and self.used + size > self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                await waiter
            finally:
                with contextlib.suppress(ValueError):
                    self._waiting.remove(waiter)
        self.used += size

    def give(self, size: int) -> None:
        self.used -= size
        for waiter in self._waiting:
            if not waiter.done():
                waiter.set_result(None)


class PartBuffers:
    """Part bodies kept for reuse, at most ``limit`` bytes of them, all dropped once the node
    has been idle for ``IDLE`` seconds (so a quiet server gives the memory back)."""

    IDLE = 30.0

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._free: dict[int, list[bytearray]] = {}
        self._kept = 0
        self._trim: asyncio.TimerHandle | None = None

    def get(self, size: int) -> bytearray:
        free = self._free.get(size)
        if free:
            self._kept -= size
            return free.pop()
        return bytearray(size)

    def give(self, body: bytearray) -> None:
        """Take ``body`` back, once nothing reads it any more (its upload succeeded)."""
        if self._kept + len(body) <= self.limit:
            self._free.setdefault(len(body), []).append(body)
            self._kept += len(body)
        if self._trim is not None:
            self._trim.cancel()
        self._trim = asyncio.get_running_loop().call_later(self.IDLE, self.clear)

    def clear(self) -> None:
        self._free.clear()
        self._kept = 0


def cut(pieces: deque[bytes | memoryview], size: int, into: bytearray | None = None) -> bytearray:
    """Take exactly ``size`` bytes off the front of ``pieces`` as one part body (``into``, of
    that size, or a new one): one copy. A bytearray, not bytes: botocore wraps a bytes body in
    a BytesIO, which aiohttp then copies once more (getbuffer() unshares it) on the event loop."""
    body = into if into is not None else bytearray(size)
    at = 0
    while at < size:
        first = pieces[0]
        take = min(len(first), size - at)
        body[at : at + take] = memoryview(first)[:take] if take < len(first) else first
        if take < len(first):
            pieces[0] = memoryview(first)[take:]  # the rest stays where it is, uncopied
        else:
            pieces.popleft()
        at += take
    return body


class S3Writer:
    def __init__(
        self, storage: S3Storage, upload_id: str, state: S3State, tail: bytes, atomic: bool
    ) -> None:
        self.storage = storage
        self.upload_id = upload_id
        self.state = state
        self.atomic = atomic
        placed = state.placed
        self.key = placed.key if placed else storage._key(upload_id)
        self.mpu = placed.mpu if placed else state.mpu
        self.unit = placed.unit if placed else 0
        self.parts: list[Part] = list(state.parts)  # the unbroken run of finished parts
        self.number = state.next_number  # of the next part to send
        self.expected = state.next_number  # of the part that continues the unbroken run
        self.finished: dict[int, Part] = {}  # finished out of order, waiting for a gap
        self.old_tail: str | None = state.tail.key if state.tail else None
        self.pieces: deque[bytes | memoryview] = deque([tail] if tail else [])
        self.buffered = len(tail)
        self.in_flight: set[asyncio.Task[None]] = set()
        self.room = asyncio.Semaphore(max(1, storage.parts_in_flight))
        self.failure: BaseException | None = None
        self.saved = len(self.parts)  # parts the state object lists
        self.saving: asyncio.Task[None] | None = None

    def _size(self, number: int) -> int:
        return self.unit or self.storage.part_size_for(number, self.state)

    async def write(self, pieces: Sequence[bytes]) -> None:
        self._raise_failure()
        for piece in pieces:
            self.pieces.append(piece)
            self.buffered += len(piece)
        while self.buffered >= (size := self._size(self.number)):
            await self._send(size)
            self.buffered -= size

    def _raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure

    async def _send(self, size: int) -> None:
        """Hand the next ``size`` bytes to a background upload as one part, once there is room."""
        await self.room.acquire()
        try:
            await self.storage.budget.take(size)
        except BaseException:
            self.room.release()
            raise
        body = cut(self.pieces, size, self.storage.buffers.get(size))
        number, self.number = self.number, self.number + 1
        task = asyncio.create_task(self._upload(number, body))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)

    async def _upload(self, number: int, body: bytearray) -> None:
        try:
            etag = await self.storage.upload_part(self.key, self.mpu, number, body)
        except BaseException as exc:  # handed to the request by its next write or commit
            if self.failure is None:
                self.failure = exc
            return
        finally:
            self.room.release()
            self.storage.budget.give(len(body))
        # Only now, after a success, is the body surely not read any more: a failed or cancelled
        # send may still sit in a closing connection's buffer, so its body is never reused.
        self.storage.buffers.give(body)
        self.finished[number] = Part(number, len(body), etag)
        while self.expected in self.finished:
            self.parts.append(self.finished.pop(self.expected))
            self.expected += 1
        if not self.atomic and self.saving is None:  # what reached the storage counts at once
            self.saving = asyncio.create_task(self._save_progress())

    async def _save_progress(self) -> None:
        """Record the finished run of parts, again while more finish (one PUT at a time)."""
        try:
            while len(self.parts) > self.saved and self.failure is None:
                count = len(self.parts)
                await self._save(self.state.with_parts(tuple(self.parts[:count])))
                self.saved = count
        finally:
            self.saving = None

    async def _save(self, state: S3State) -> None:
        await self.storage._save_state(self.upload_id, state)
        if self.old_tail:  # the state no longer names it
            old, self.old_tail = self.old_tail, None
            await self.storage._delete_key(old)

    async def _settle(self) -> None:
        """Wait for every part in flight and for the progress being saved."""
        if self.in_flight:
            await asyncio.gather(*self.in_flight, return_exceptions=True)
        if self.saving is not None:
            await asyncio.gather(self.saving, return_exceptions=True)

    async def commit(self) -> int:
        try:
            await asyncio.shield(self._settle())
            if self.failure is not None:
                if not self.atomic and len(self.parts) > self.saved:
                    # Keep what did land (the run before the failed part); the rest is resent.
                    with contextlib.suppress(Exception):
                        await self._save(self.state.with_parts(tuple(self.parts)))
                raise self.failure
            state = self.state.with_parts(tuple(self.parts), b"".join(self.pieces))
            await self._save(state)
            return state.held
        finally:
            self.pieces.clear()

    async def discard(self) -> None:
        for task in list(self.in_flight):
            task.cancel()
        await asyncio.shield(self._settle())
        self.pieces.clear()
