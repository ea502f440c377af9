"""The request body as an async iterator of bytes, with a stall timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.requests import ClientDisconnect, Request

from haul.core.pump import BodyInterrupted


class _StallWatch:
    """Cancels the reading task when it has waited ``limit`` seconds for the next piece.

    One timer per request, checked a few times per ``limit``, instead of a timeout scope per
    piece: at a GB/s the body arrives in ~15,000 pieces a second, and arming and cancelling a
    timer for each one costs measurable event-loop time. Only time spent waiting for the
    client counts, never time spent writing what already arrived.
    """

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        self.waiting_since: float | None = None
        self.fired = False
        self._handle = self.loop.call_later(limit / 4, self._check)

    def _check(self) -> None:
        since = self.waiting_since
        if since is not None and self.loop.time() - since >= self.limit and self.task is not None:
            self.fired = True
            self.task.cancel()
        else:
            self._handle = self.loop.call_later(self.limit / 4, self._check)

    def close(self) -> None:
        self._handle.cancel()


async def request_body(request: Request, stall_timeout: float) -> AsyncIterator[bytes]:
    """Yield the body as it arrives; a client that vanishes or sends nothing for
    ``stall_timeout`` seconds ends it with BodyInterrupted."""
    watch = _StallWatch(stall_timeout) if stall_timeout else None
    stream = request.stream()
    try:
        while True:
            if watch is not None:
                watch.waiting_since = watch.loop.time()
            try:
                chunk = await anext(stream)
            except StopAsyncIteration:
                return
            finally:
                if watch is not None:
                    watch.waiting_since = None
            if chunk:
                yield chunk
    except ClientDisconnect:
        raise BodyInterrupted("the client closed the connection") from None
    except asyncio.CancelledError:
        if watch is None or not watch.fired or watch.task is None:
            raise
        watch.task.uncancel()
        raise BodyInterrupted(f"no body bytes for {stall_timeout:g} s", timed_out=True) from None
    finally:
        if watch is not None:
            watch.close()
        await stream.aclose()
