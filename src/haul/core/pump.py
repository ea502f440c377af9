"""Move a request body into a storage writer in bounded blocks.

The socket delivers small pieces (tens of KiB); writing each one through a worker thread would
cost more in hand-offs than in I/O, so pieces are gathered into blocks of ``BLOCK`` bytes. While
one block is written (and hashed) off the event loop the next one is being received, so network
and disk overlap and at most two blocks per request are ever in memory.
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

    async def flush(block: bytes) -> None:
        jobs = [writer.write(block), *(asyncio.to_thread(h.update, block) for h in hashers)]
        await asyncio.gather(*jobs)

    total = 0
    buffer = bytearray()
    in_flight: asyncio.Task[None] | None = None
    try:
        async for piece in body:
            total += len(piece)
            if limit is not None and total > limit:
                raise ExceedsLength(f"the request carries more than the {limit} bytes still owed")
            buffer += piece
            if len(buffer) >= BLOCK:
                if in_flight is not None:
                    await in_flight
                in_flight = asyncio.create_task(flush(bytes(buffer)))
                buffer.clear()
    except BodyInterrupted:
        if in_flight is not None:
            await in_flight
            in_flight = None
        if buffer:
            await flush(bytes(buffer))
        raise
    finally:
        # Whatever happened, a block already handed to the writer must land (or fail) before
        # the caller commits or discards.
        if in_flight is not None:
            await asyncio.shield(in_flight)
    if buffer:
        await flush(bytes(buffer))
    return total
