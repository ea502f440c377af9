"""Run the ASGI application: under uvicorn for plain HTTP (the fastest here), under granian
when haul serves TLS itself (HTTP/2 and HTTP/1.1 on one port, chosen by ALPN)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import uvicorn

from haul.config import Settings
from haul.connection_guard import guarded_protocol
from haul.http.app import create_app

log = logging.getLogger("haul")


def serve(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _warn_if_open(settings)
    scheme = "https" if settings.tls_cert else "http"
    log.info(
        "haul serving on %s://%s:%d%s (data dir %s)",
        scheme,
        settings.host,
        settings.port,
        settings.base_path,
        settings.data_dir.resolve(),
    )
    if settings.tls_cert:
        _serve_tls(settings)
    else:
        _serve_plain(settings)


def _serve_plain(settings: Settings) -> None:
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        http=guarded_protocol(settings.header_timeout, settings.max_connections_per_client),
        ws="none",
        log_level=settings.log_level,
        access_log=settings.access_log,
        lifespan="on",
        timeout_keep_alive=30,
        server_header=False,
        # Forwarded headers are honoured by haul itself, and only with --trust-proxy.
        proxy_headers=False,
    )
    uvicorn.Server(config).run()


def _serve_tls(settings: Settings) -> None:
    # Imported here: only TLS deployments need the Rust server.
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings, HTTP2Settings
    from granian.server.embed import Server

    server = Server(
        create_app(settings),
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        http=HTTPModes.auto,
        http1_settings=HTTP1Settings(header_read_timeout=int(settings.header_timeout * 1000)),
        # Uploads are one long stream per request: windows far above the 1 MiB default keep
        # HTTP/2 from waiting on WINDOW_UPDATEs, and larger frames mean fewer of them.
        http2_settings=HTTP2Settings(
            adaptive_window=False,
            initial_connection_window_size=32 * 1024 * 1024,
            initial_stream_window_size=16 * 1024 * 1024,
            max_frame_size=1024 * 1024,
        ),
        ssl_cert=Path(settings.tls_cert),
        ssl_key=Path(settings.tls_key),
        log_enabled=settings.access_log,
        log_access=settings.access_log,
    )
    asyncio.run(server.serve())


def _warn_if_open(settings: Settings) -> None:
    """Anonymous access is the embedded default; said loudly when others can reach it."""
    loopback = settings.host in ("127.0.0.1", "::1", "localhost")
    if settings.anonymous_allowed and not loopback:
        log.warning(
            "ANONYMOUS ACCESS on %s: anyone who can reach this address can upload, and read "
            "anonymous uploads by URL. Configure --api-keys or --jwt-secret/--jwt-public-key "
            "to require credentials.",
            settings.host,
        )
