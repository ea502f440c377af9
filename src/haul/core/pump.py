"""Move a request body into a storage writer in bounded blocks.

The socket delivers small pieces (tens of KiB); writing each one through a worker thread would
cost more in hand-offs than in I/O, so pieces are gathered into blocks of ``BLOCK`` bytes, kept
as the list of pieces they arrived in (the storage writes them with one gathered write, so no
byte is copied in Python). While one block is written (and hashed) off the event loop the next
one is being received, so network and disk overlap and at most two blocks per request are ever
in memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from haul.core.interfaces import ChunkWriter
from haul.errors import ExceedsLength
from haul.protocol.checksums import Hasher

BLOCK = 1 << 20


class BodyInterrupted(Exception):
    """The client went away (or stalled past the timeout) before the body ended."""

    def __init__(self, reason: str, *, timed_out: bool = False) -> None:
        super().__init__(reason)
        self.timed_out = timed_out


async def pump(
    body: AsyncIterator[bytes],
    writer: ChunkWriter,
    hashers: Sequence[Hasher],
    limit: int | None,
) -> int:
    """Write the whole body, return its length.

    Raises ExceedsLength (nothing past ``limit`` is written) and re-raises BodyInterrupted after
    everything received before the interruption has been written.
    """

    def digest(hasher: Hasher, block: list[bytes]) -> None:
        for piece in block:
            hasher.update(piece)

    async def flush(block: list[bytes]) -> None:
        jobs = [writer.write(block), *(asyncio.to_thread(digest, h, block) for h in hashers)]
        await asyncio.gather(*jobs)

    total = 0
    buffer: list[bytes] = []
    buffered = 0
    in_flight: asyncio.Task[None] | None = None
    try:
        async for piece in body:
            total += len(piece)
            if limit is not None and total > limit:
                raise ExceedsLength(f"the request carries more than the {limit} bytes still owed")
            buffer.append(piece)
            buffered += len(piece)
            if buffered >= BLOCK:
                if in_flight is not None:
                    await in_flight
                in_flight = asyncio.create_task(flush(buffer))
                buffer, buffered = [], 0
    except BodyInterrupted:
        if in_flight is not None:
            await in_flight
            in_flight = None
        if buffer:
            await flush(buffer)
        raise
    finally:
        # Whatever happened, a block already handed to the writer must land (or fail) before
        # the caller commits or discards.
        if in_flight is not None:
            await asyncio.shield(in_flight)
    if buffer:
        await flush(buffer)
    return total
