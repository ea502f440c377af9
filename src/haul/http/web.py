"""The upload page at ``/``, its bundled assets under ``/ui/``, ``/api/info``, which tells
the page (and any client) the server's limits before it sends a byte, and ``/openapi.json``."""

from __future__ import annotations

import mimetypes
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import haul
from haul.config import Settings
from haul.http import openapi
from haul.wire.checksums import ALGORITHMS
from haul.wire.tus import TUS_VERSION

# Built by web/build.mjs from the sources in web/ and committed, so every wheel carries it.
DIST = Path(__file__).resolve().parent.parent / "web" / "dist"
# The bundle's source maps; Python's table does not know them (they would go as octet-stream).
mimetypes.add_type("application/json", ".map")

# The page needs no inline script or style; WebAssembly (the hasher) needs wasm-unsafe-eval.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; "
    "style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class _PageHeaders:
    """Adds PAGE_HEADERS to every response of the wrapped app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"cache-control"]
                headers += [(k.lower().encode(), v.encode()) for k, v in PAGE_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def info(settings: Settings, extensions: tuple[str, ...]) -> dict[str, object]:
    return {
        "server": "haul",
        "version": haul.__version__,
        "tus": {
            "version": TUS_VERSION,
            "endpoint": settings.base_path,
            "extensions": list(extensions),
            "checksum_algorithms": list(ALGORITHMS),
        },
        "max_size": settings.max_size or None,
        "allowed_types": list(settings.allowed_types),
        "denied_types": list(settings.denied_types),
        "instant_upload": settings.instant_upload,
        "auth": {"required": not settings.anonymous_allowed, "accepted": settings.auth_configured},
        "expiration": settings.expiration or None,
    }


def routes(settings: Settings, extensions: tuple[str, ...]) -> list[BaseRoute]:
    body = info(settings, extensions)

    async def api_info(request: Request) -> Response:
        return JSONResponse(body, headers={"Cache-Control": "no-cache"})

    async def page(request: Request) -> Response:
        index = DIST / "index.html"
        if settings.web_page and index.is_file():
            return FileResponse(index, headers=PAGE_HEADERS)
        hint = "" if not settings.web_page else "The upload page is not built: run ./dev setup.\n"
        return PlainTextResponse(
            f"haul upload server. tus {TUS_VERSION} endpoint: {settings.base_path}\n{hint}"
        )

    spec = openapi.document(settings)

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(spec)

    result: list[BaseRoute] = [
        Route("/", page, methods=["GET"]),
        Route("/api/info", api_info, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
    ]
    if settings.web_page:
        result.append(Mount("/ui", _PageHeaders(StaticFiles(directory=DIST, check_dir=False))))
    return result
