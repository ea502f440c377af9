"""Move a request body into a storage writer in bounded blocks (and hash stored bytes).

The socket delivers small pieces (tens of KiB); writing each one through a worker thread would
cost more in hand-offs than in I/O, so pieces are gathered into blocks of ``BLOCK`` bytes, kept
as the list of pieces they arrived in (the storage writes them with one gathered write, so no
byte is copied in Python). Writing and each hash are lanes of their own, each taking blocks in
order in a worker thread, so receiving, writing and hashing all run at once and the slowest of
them sets the pace; at most ``DEPTH`` blocks per request are in memory.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from haul.core.interfaces import ChunkWriter
from haul.errors import ExceedsLength
from haul.wire.checksums import Hasher

BLOCK = 1 << 20
DEPTH = 4


class BodyInterrupted(Exception):
    """The client went away (or stalled past the timeout) before the body ended."""

    def __init__(self, reason: str, *, timed_out: bool = False) -> None:
        super().__init__(reason)
        self.timed_out = timed_out


class _Lane:
    """Runs async jobs one at a time in the order they were added; a failure fails every
    later job."""

    def __init__(self) -> None:
        self.last: asyncio.Task[None] | None = None

    def add(self, job: Callable[[], Awaitable[None]]) -> asyncio.Future[None]:
        previous = self.last

        async def run() -> None:
            if previous is not None:
                await previous
            await job()

        self.last = asyncio.create_task(run())
        return self.last


class _ThreadLane:
    """Runs blocking jobs one at a time, in order, in a worker thread that keeps taking queued
    jobs until none is left: consecutive jobs never wait for a round trip through the event
    loop (for a hash at 2 GB/s those gaps would cost a third of its time). A failure fails
    every later job."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._jobs: deque[tuple[Callable[[], None], asyncio.Future[None]]] = deque()
        self._running = False
        self._failure: BaseException | None = None

    def add(self, job: Callable[[], None]) -> asyncio.Future[None]:
        done = self._loop.create_future()
        with self._lock:
            self._jobs.append((job, done))
            start, self._running = not self._running, True
        if start:
            self._loop.run_in_executor(None, self._work)
        return done

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._jobs:
                    self._running = False
                    return
                job, done = self._jobs.popleft()
            failure = self._failure
            if failure is None:
                try:
                    job()
                except BaseException as exc:  # handed to the waiting coroutine
                    failure = self._failure = exc
            self._loop.call_soon_threadsafe(_settle, done, failure)


def _settle(done: asyncio.Future[None], failure: BaseException | None) -> None:
    if done.cancelled():
        return
    if failure is None:
        done.set_result(None)
    else:
        done.set_exception(failure)


async def pump(
    body: AsyncIterator[bytes],
    writer: ChunkWriter,
    hashers: Sequence[Hasher],
    limit: int | None,
    waiting: Callable[[bool], None] = lambda _: None,
) -> int:
    """Write the whole body, return its length; ``waiting(True)`` while it waits for the
    writer (or a hash) rather than for the body, ``waiting(False)`` once it stops waiting.

    Raises ExceedsLength (nothing past ``limit`` is written) and re-raises BodyInterrupted after
    everything received before the interruption has been written.
    """

    def digest(hasher: Hasher, block: list[bytes]) -> None:
        for piece in block:
            hasher.update(piece)

    write_lane = _Lane()
    hash_lanes = [(_ThreadLane(), hasher) for hasher in hashers]
    blocks: deque[list[asyncio.Future[None]]] = deque()

    async def flush(block: list[bytes]) -> None:
        while len(blocks) >= DEPTH:
            waiting(True)
            await asyncio.gather(*blocks.popleft())
            waiting(False)
        jobs = [write_lane.add(lambda: writer.write(block))]
        for lane, hasher in hash_lanes:
            jobs.append(lane.add(functools.partial(digest, hasher, block)))
        blocks.append(jobs)

    async def drain() -> None:
        waiting(True)
        while blocks:
            await asyncio.gather(*blocks.popleft())

    total = 0
    buffer: list[bytes] = []
    buffered = 0
    try:
        try:
            async for piece in body:
                total += len(piece)
                if limit is not None and total > limit:
                    raise ExceedsLength(
                        f"the request carries more than the {limit} bytes still owed"
                    )
                buffer.append(piece)
                buffered += len(piece)
                if buffered >= BLOCK:
                    await flush(buffer)
                    buffer, buffered = [], 0
        except BodyInterrupted:
            if buffer:
                await flush(buffer)
            await drain()
            raise
        if buffer:
            await flush(buffer)
        await drain()
    except asyncio.CancelledError:
        # Cancelled (its client went away while the storage held it up): blocks still being
        # written are abandoned, not waited for; the caller discards the writer. (A writer
        # working in a thread lets that thread end first, see the local storage.)
        for jobs in blocks:
            for job in jobs:
                job.cancel()
        raise
    finally:
        # Blocks already handed to the writer must land (or fail) before the caller commits
        # or discards, whatever happened.
        pending = [job for jobs in blocks for job in jobs]
        if pending:
            await asyncio.shield(asyncio.gather(*pending, return_exceptions=True))
    return total


async def digest_stream(blocks: AsyncIterator[bytes], hasher: Hasher) -> None:
    """Feed every block to ``hasher`` in a worker thread while the next ones are being read."""
    lane = _ThreadLane()
    pending: deque[asyncio.Future[None]] = deque()
    try:
        async for block in blocks:
            while len(pending) >= DEPTH:
                await pending.popleft()
            pending.append(lane.add(functools.partial(hasher.update, block)))
        while pending:
            await pending.popleft()
    finally:
        if pending:  # no hashing may go on behind the caller's back
            await asyncio.shield(asyncio.gather(*pending, return_exceptions=True))
