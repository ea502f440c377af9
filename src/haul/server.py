"""Run the ASGI application under uvicorn (the fastest here), with haul's own protocols: the
guarded HTTP/1.1 one for plain HTTP, and behind a TLS gate (HTTP/2 and HTTP/1.1 on one port,
chosen by ALPN) when haul serves TLS itself."""

from __future__ import annotations

import asyncio
import logging

import uvicorn

from haul.config import Settings
from haul.connection_guard import guarded_protocol
from haul.http.app import create_app
from haul.tls_gate import tls_context, tls_protocol

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
    protocol = guarded_protocol(settings.header_timeout, settings.max_connections_per_client)
    _serve(settings, protocol)


def _serve_tls(settings: Settings) -> None:
    context = tls_context(settings.tls_cert, settings.tls_key)
    protocol = tls_protocol(context, settings.header_timeout, settings.max_connections_per_client)
    # uvicorn starts no TLS itself here and would announce "http://": haul's line says https.
    logging.getLogger("uvicorn.error").addFilter(
        lambda record: not record.getMessage().startswith("Uvicorn running on")
    )
    # uvloop may hand a new connection's first bytes to its protocol before that protocol can
    # pause reading, and the TLS gate must start TLS on exactly those bytes: asyncio's loop.
    _serve(settings, protocol, loop="asyncio")


def _serve(settings: Settings, protocol: type[asyncio.Protocol], loop: str = "auto") -> None:
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop=loop,
        http=protocol,
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
