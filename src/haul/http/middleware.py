"""Small pure-ASGI middlewares."""

from __future__ import annotations

import asyncio
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("haul.http")

# The scope extension through which haul's transports say that the client went away before
# its answer: {"gone": bool, "callbacks": [callable, ...]}; each callback is called once.
CLIENT_GONE = "haul.client_gone"
# How long a request whose client went away may go on by itself: a body cut short is noticed
# at the next read and what arrived is saved, which takes a store in time milliseconds.
GONE_GRACE = 1.0

_OVERRIDABLE = {b"PATCH", b"DELETE", b"HEAD", b"GET", b"OPTIONS"}


class MethodOverride:
    """Honour ``X-HTTP-Method-Override`` on POST, for environments that cannot send PATCH or
    DELETE (tus 1.0.0 core protocol)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            for name, value in scope["headers"]:
                if name == b"x-http-method-override":
                    method = value.strip().upper()
                    if method in _OVERRIDABLE:
                        scope = dict(scope, method=method.decode("ascii"))
                    break
        await self.app(scope, receive, send)


class StrictTransportSecurity:
    """Tells browsers to use HTTPS only for this host (sent when haul itself serves TLS)."""

    VALUE = b"max-age=31536000"

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"strict-transport-security", self.VALUE)]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_header)


class CancelWhenClientGone:
    """A request whose client went away is cancelled, wherever it waits (on a store that hangs,
    above all), a moment after: what it holds, an upload's lock first, is then free for the
    client's next attempt instead of once the store answers. Its cleanup runs as for any
    cancellation: unsaved bytes are dropped, and the client sends them again."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gone = scope.get("extensions", {}).get(CLIENT_GONE) if scope["type"] == "http" else None
        task = asyncio.current_task()
        if gone is None or task is None:
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle | None = None
        cancelled = False

        def cancel() -> None:
            nonlocal cancelled
            cancelled = True
            task.cancel()

        def client_left() -> None:
            nonlocal timer
            if timer is None:
                timer = loop.call_later(GONE_GRACE, cancel)

        gone["callbacks"].append(client_left)
        if gone["gone"]:
            client_left()
        try:
            await self.app(scope, receive, send)
        except asyncio.CancelledError:
            if not (cancelled or gone["gone"]):  # (HTTP/2 cancels some requests itself)
                raise
            task.uncancel()
            log.info("%s %s: the client went away; the request was cancelled",
                     scope["method"], scope["path"])  # fmt: skip
        finally:
            if timer is not None:
                timer.cancel()
