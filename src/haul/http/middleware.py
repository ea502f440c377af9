"""Small pure-ASGI middlewares."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
