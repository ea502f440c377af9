"""Appending to an unfinished S3 upload, pipelined: bytes are copied into the part being filled
as they arrive; as soon as it is full it is handed to a background upload while the request's
next bytes keep arriving, with at most ``parts_in_flight`` parts of one upload on their way at
once. What is left when the request ends is the new tail, kept inside the state object.

Memory: every part body, being filled or in flight, takes its room from one byte budget per
node (``memory``) before its first byte is copied in: an upload waits for room before it reads
on, so its sender slows, and the node's part bodies never exceed the budget (or one part, if
larger). A request's bytes wait nowhere else (uvicorn pauses reading a socket after a few MiB),
so the node's memory stays flat with the number of uploads. A client that stalls in the middle
of a part holds that part's room until its request ends (the server's idle timeout).
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
from collections.abc import Sequence
from typing import TYPE_CHECKING

from haul.storage.s3_state import Part, S3State

if TYPE_CHECKING:
    from haul.storage.s3 import S3Storage


class ByteBudget:
    """Bytes of part bodies (being filled or in flight) across every upload of a node."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._waiting: list[asyncio.Future[None]] = []

    async def take(self, size: int) -> None:
        """Wait for room for ``size`` bytes. With nothing held on the node a part goes whatever
        its size (so a part larger than the budget still goes, and nobody waits for ever:
        whatever is held is sent, or given back when its request ends, and makes room)."""
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
        self.tail = memoryview(tail)  # the stored tail, copied into the first part filled
        self.filling: bytearray | None = None  # the part being filled; its room is taken
        self.filled = 0
        self.in_flight: set[asyncio.Task[None]] = set()
        self.room = asyncio.Semaphore(max(1, storage.parts_in_flight))
        self.failure: BaseException | None = None
        self.saved = len(self.parts)  # parts the state object lists
        self.saving: asyncio.Task[None] | None = None

    def _size(self, number: int) -> int:
        return self.unit or self.storage.part_size_for(number, self.state)

    async def write(self, pieces: Sequence[bytes]) -> None:
        self._raise_failure()
        # The stored tail first. A view is advanced by what was copied before anything else is
        # awaited, so a write cut short (cancelled while it waits for room) loses and doubles
        # nothing: the tail held is the part being filled, then what was not copied yet.
        while self.tail:
            await self._take_room()
            self.tail = self.tail[self._fill(self.tail) :]
            await self._hand_over_if_full()
        for piece in pieces:
            view = memoryview(piece)
            while view:
                await self._take_room()
                view = view[self._fill(view) :]
                await self._hand_over_if_full()

    async def _take_room(self) -> None:
        """Start the next part, once the node's budget has room for it."""
        if self.filling is None:
            size = self._size(self.number)
            await self.storage.budget.take(size)
            self.filling, self.filled = self.storage.buffers.get(size), 0

    def _fill(self, view: memoryview) -> int:
        """Copy the start of ``view`` into the part being filled; how many bytes were copied."""
        assert self.filling is not None
        body, at = self.filling, self.filled
        take = min(len(view), len(body) - at)
        body[at : at + take] = view[:take]
        self.filled += take
        return take

    async def _hand_over_if_full(self) -> None:
        """A full part goes to a background upload, once fewer than K are in flight."""
        if self.filling is None or self.filled < len(self.filling):
            return
        await self.room.acquire()
        body, self.filling = self.filling, None
        number, self.number = self.number, self.number + 1
        task = asyncio.create_task(self._upload(number, body))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)

    def _raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure

    def _held_tail(self) -> bytes:
        """The bytes after the last part handed over."""
        filled = memoryview(self.filling)[: self.filled] if self.filling is not None else b""
        return bytes(filled) + bytes(self.tail)

    def _release(self) -> None:
        """Give back the part being filled: nothing but this writer ever saw it."""
        if self.filling is not None:
            self.storage.budget.give(len(self.filling))
            self.storage.buffers.give(self.filling)
            self.filling = None

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
            state = self.state.with_parts(tuple(self.parts), self._held_tail())
            await self._save(state)
            return state.held
        finally:
            self._release()

    async def discard(self) -> None:
        for task in list(self.in_flight):
            task.cancel()
        await asyncio.shield(self._settle())
        self._release()
