"""Small pure-ASGI middlewares."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

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
