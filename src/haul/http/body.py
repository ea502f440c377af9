"""The request body as an async iterator of bytes, with a stall timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.requests import ClientDisconnect, Request

from haul.core.pump import BodyInterrupted


async def request_body(request: Request, stall_timeout: float) -> AsyncIterator[bytes]:
    """Yield the body as it arrives; a client that vanishes or sends nothing for
    ``stall_timeout`` seconds ends it with BodyInterrupted."""
    stream = request.stream()
    try:
        while True:
            try:
                async with asyncio.timeout(stall_timeout or None):
                    chunk = await anext(stream)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise BodyInterrupted(
                    f"no body bytes for {stall_timeout:g} s", timed_out=True
                ) from None
            if chunk:
                yield chunk
    except ClientDisconnect:
        raise BodyInterrupted("the client closed the connection") from None
    finally:
        await stream.aclose()
