"""Assemble the ASGI application: the HTTP surfaces over an upload service built elsewhere
(see :mod:`haul.compose`), their middleware, and the one error renderer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from haul.config import Settings
from haul.core.gate import RequestInfo, current_request
from haul.core.interfaces import DirectUploads
from haul.core.service import UploadService
from haul.errors import HaulError, VersionUnsupported
from haul.http import web
from haul.http.auth import Authenticator
from haul.http.chunks import ChunkApi
from haul.http.direct import DirectEndpoint
from haul.http.flow import FlowEndpoint
from haul.http.guard import ClientGuard
from haul.http.logs import RequestContext, tag
from haul.http.metrics import Metrics, RequestMetrics
from haul.http.middleware import CancelWhenClientGone, MethodOverride, StrictTransportSecurity
from haul.http.routing import ExactRoute
from haul.http.tus import EXTENSIONS, TusEndpoint
from haul.http.uploads_api import UploadsApi
from haul.wire.tus import TUS_VERSION

log = logging.getLogger("haul")

TUS_REQUEST_HEADERS = (
    "Authorization", "Content-Type", "Tus-Resumable", "Upload-Length", "Upload-Offset",
    "Upload-Metadata", "Upload-Defer-Length", "Upload-Concat", "Upload-Checksum",
    "X-HTTP-Method-Override", "X-Requested-With", "Range", "If-Range", "If-None-Match",
    "Repr-Digest", "Haul-Proof", "Idempotency-Key", "X-Request-Id",
    "Upload-Draft-Interop-Version", "Upload-Complete", "Upload-Incomplete", "Content-Digest",
    "Content-Disposition",
)  # fmt: skip
TUS_RESPONSE_HEADERS = (
    "Location", "Tus-Resumable", "Tus-Version", "Tus-Extension", "Tus-Max-Size",
    "Tus-Checksum-Algorithm", "Upload-Offset", "Upload-Length", "Upload-Metadata",
    "Upload-Defer-Length", "Upload-Concat", "Upload-Expires", "Content-Range",
    "Content-Disposition", "Content-Length", "ETag", "Retry-After", "Repr-Digest",
    "Haul-Challenge", "Haul-Download-Link", "WWW-Authenticate", "X-Request-Id",
    "Upload-Complete", "Upload-Incomplete", "Upload-Limit", "Accept-Patch",
    "Upload-Draft-Interop-Versions", "Haul-Digest-Pending",
)  # fmt: skip


class TusResumableHeader:
    """Every response under the tus endpoint carries ``Tus-Resumable`` (tus 1.0.0 core)."""

    def __init__(self, app: ASGIApp, base_path: str) -> None:
        self.app = app
        self.prefix = base_path.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"tus-resumable", TUS_VERSION.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_header)


# What a blocking hook is shown of the request: never credentials (Authorization, cookies).
HOOK_REQUEST_HEADERS = (
    "user-agent", "origin", "referer", "content-type", "content-length", "tus-resumable",
    "upload-length", "upload-defer-length", "upload-metadata", "upload-concat", "upload-offset",
    "x-request-id", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
)  # fmt: skip


class HookRequestContext:
    """Tells the hooks who asked (through the core's request context) and adds the headers a
    pre-finish hook handed back to the answer of the request that completed the upload."""

    def __init__(self, app: ASGIApp, base_url: Callable[[Request], str]) -> None:
        self.app = app
        self.base_url = base_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        try:
            base = self.base_url(request)
        except HaulError:  # a bad Host: the request is refused on its own path
            base = ""
        info = RequestInfo(
            method=scope["method"],
            path=scope["path"],
            client=scope["client"][0] if scope.get("client") else "",
            headers={k: v for k, v in request.headers.items() if k in HOOK_REQUEST_HEADERS},
            base_url=base,
        )
        token = current_request.set(info)

        async def answer(message: Message) -> None:
            if message["type"] == "http.response.start" and info.answer_headers:
                added = [(k.encode(), v.encode()) for k, v in info.answer_headers.items()]
                headers = [*message.get("headers", []), *added]
                names = b", ".join(name for name, _ in added)
                # A browser reads them only when CORS names them: add them where CORS answered.
                headers = [
                    (name, value + b", " + names if name == b"access-control-expose-headers"
                     else value)
                    for name, value in headers
                ]  # fmt: skip
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, answer)
        finally:
            current_request.reset(token)


async def _haul_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HaulError)
    tag(error_code=exc.code)  # the access line says why, not only the status
    headers = dict(exc.headers)
    if isinstance(exc, VersionUnsupported):
        headers["Tus-Version"] = TUS_VERSION
    return PlainTextResponse(exc.render(), status_code=exc.status, headers=headers)


async def _routing_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (paths that match no route) in the same ``CODE: message`` form."""
    assert isinstance(exc, HTTPException)
    code = {404: "ERR_UPLOAD_NOT_FOUND", 405: "ERR_METHOD_NOT_ALLOWED"}.get(
        exc.status_code, "ERR_BAD_REQUEST"
    )
    message = "no such upload or resource" if exc.status_code == 404 else str(exc.detail)
    return PlainTextResponse(
        f"{code}: {message}\n", status_code=exc.status_code, headers=exc.headers
    )


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return PlainTextResponse("ERR_INTERNAL: the server failed; the error is logged\n", 500)


async def _sweep_forever(service: UploadService, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await service.collect_garbage()
        except Exception:
            log.exception("garbage collection failed; retrying in %s s", interval)


def create_app(
    settings: Settings,
    service: UploadService,
    *,
    metrics: Metrics | None = None,
    background: Sequence[Callable[[], Coroutine[Any, Any, None]]] = (),
) -> Starlette:
    """The app over ``service``; with ``metrics`` (and --metrics) it counts into them and serves
    them at /metrics. Each of ``background`` runs while the app does (the hooks' delivery)."""
    auth = Authenticator(settings)  # shared: an owner's rate limit spans every endpoint
    tus = TusEndpoint(service, settings, auth)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.open()
        sweeper = None
        if settings.sweep_interval:
            sweeper = asyncio.create_task(_sweep_forever(service, settings.sweep_interval))
        running = [asyncio.create_task(job()) for job in background]
        if settings.verify_interval:  # every node verifies pending digests, any node's
            running.append(asyncio.create_task(service.verify_forever(settings.verify_interval)))
        try:
            yield
        finally:
            for task in [*running, *([sweeper] if sweeper else [])]:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await service.close()

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    every_method = ["GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS", "PUT"]
    base = settings.base_path
    routes = [
        *web.routes(settings, EXTENSIONS),
        Route("/healthz", health, methods=["GET"]),
        ExactRoute(base, tus.collection, methods=every_method),
        ExactRoute(base.rstrip("/"), tus.collection, methods=every_method),
        ExactRoute(base + "{upload_id}", tus.resource, methods=every_method, name="upload"),
    ]
    routes += UploadsApi(service, auth, tus.location).routes()
    if settings.chunk_api:
        for surface in (ChunkApi, FlowEndpoint):
            routes += surface(
                service,
                auth,
                tus.location,
                prefix=settings.chunk_api_prefix,
                body_timeout=settings.body_timeout,
                min_speed=settings.min_speed,
            ).routes()
    if isinstance(service.storage, DirectUploads):  # presigned uploads straight to the store
        routes += DirectEndpoint(service, service.storage, settings, auth).routes()
    if metrics is not None and settings.metrics:
        service.events.subscribe(metrics.hear)
        handler = metrics.endpoint(service.store, settings.metrics_token)
        routes.append(Route("/metrics", handler, methods=["GET"]))
    middleware = [
        Middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=list(TUS_REQUEST_HEADERS),
            expose_headers=list(TUS_RESPONSE_HEADERS),
            max_age=86400,
        ),
        Middleware(
            ClientGuard,
            max_in_flight=settings.max_requests_per_client,
            rate=settings.rate_limit,
            burst=settings.rate_burst,
            trust_proxy=settings.trust_proxy,
        ),
        Middleware(MethodOverride),
        Middleware(TusResumableHeader, base_path=base),
    ]
    if settings.tls_cert:
        middleware.insert(0, Middleware(StrictTransportSecurity))
    if metrics is not None and settings.metrics:  # outermost: it sees every answer
        middleware.insert(0, Middleware(RequestMetrics, metrics=metrics))
    if settings.hook_url or settings.hook_command:
        middleware.insert(0, Middleware(HookRequestContext, base_url=lambda r: tus.location(r, "")))
    middleware.insert(0, Middleware(RequestContext, access_log=settings.access_log))
    middleware.insert(0, Middleware(CancelWhenClientGone))  # outermost: it unwinds them all
    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={
            HaulError: _haul_error,
            HTTPException: _routing_error,
            Exception: _internal_error,
        },
    )
    # Every path is answered as it is: `/files//` (an id of "/") is no upload, not a redirect.
    app.router.redirect_slashes = False
    return app
