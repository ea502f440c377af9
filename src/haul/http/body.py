"""The request body as an async iterator of bytes, with a stall timeout and a minimum speed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.requests import ClientDisconnect, Request

from haul.core.pump import BodyInterrupted


class _StallWatch:
    """Cancels the reading task when it has waited ``limit`` seconds for the next piece, or
    when, ``limit`` seconds or more into the body, it has averaged under ``min_speed`` bytes a
    second (a client trickling a byte now and then never stalls, but must not hold a slot).

    One timer per request, checked a few times per ``limit``, instead of a timeout scope per
    piece: at a GB/s the body arrives in ~15,000 pieces a second, and arming and cancelling a
    timer for each one costs measurable event-loop time. Only time spent waiting for the
    client counts, never time spent writing what already arrived.
    """

    def __init__(self, limit: float, min_speed: int) -> None:
        self.limit = limit
        self.min_speed = min_speed
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        self.started = self.loop.time()
        self.received = 0
        self.waiting_since: float | None = None
        self.fired: str | None = None
        self._handle = self.loop.call_later(limit / 4, self._check)

    def _check(self) -> None:
        now = self.loop.time()
        since = self.waiting_since
        elapsed = now - self.started
        if since is not None and now - since >= self.limit:
            self.fired = f"no body bytes for {self.limit:g} s"
        elif self.min_speed and elapsed >= self.limit and self.received < self.min_speed * elapsed:
            self.fired = f"the body arrived slower than {self.min_speed} bytes a second"
        if self.fired and self.task is not None:
            self.task.cancel()
        else:
            self._handle = self.loop.call_later(self.limit / 4, self._check)

    def close(self) -> None:
        self._handle.cancel()


async def request_body(
    request: Request, stall_timeout: float, min_speed: int = 0
) -> AsyncIterator[bytes]:
    """Yield the body as it arrives; a client that vanishes, sends nothing for
    ``stall_timeout`` seconds or sends too slowly ends it with BodyInterrupted."""
    watch = _StallWatch(stall_timeout, min_speed) if stall_timeout else None
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
                if watch is not None:
                    watch.received += len(chunk)
                yield chunk
    except ClientDisconnect:
        raise BodyInterrupted("the client closed the connection") from None
    except asyncio.CancelledError:
        if watch is None or not watch.fired or watch.task is None:
            raise
        watch.task.uncancel()
        raise BodyInterrupted(watch.fired, timed_out=True) from None
    finally:
        if watch is not None:
            watch.close()
        await stream.aclose()
