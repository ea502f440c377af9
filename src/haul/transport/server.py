"""Run an ASGI application under uvicorn (the fastest here), with haul's own protocols: the
guarded HTTP/1.1 one for plain HTTP, and behind a TLS gate (HTTP/2 and HTTP/1.1 on one port,
chosen by ALPN) when haul serves TLS itself. Knows nothing of what the application does."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import uvicorn
from starlette.types import ASGIApp

from haul.transport.guard import guarded_protocol
from haul.transport.tls import tls_context, tls_protocol


@dataclass(frozen=True)
class Listen:
    """Where and how to accept connections."""

    host: str
    port: int
    header_timeout: float
    max_connections_per_client: int
    tls_cert: str = ""  # PEM files; both empty for plain HTTP
    tls_key: str = ""
    log_level: str = "info"
    access_log: bool = False
    http1: str = "lean"  # the HTTP/1.1 protocol by name (haul.transport.http1)


def run(app: ASGIApp, listen: Listen) -> None:
    if listen.tls_cert:
        context = tls_context(listen.tls_cert, listen.tls_key)
        protocol = tls_protocol(
            context, listen.header_timeout, listen.max_connections_per_client, listen.http1
        )
        # uvicorn starts no TLS itself here and would announce "http://": haul's line says https.
        logging.getLogger("uvicorn.error").addFilter(
            lambda record: not record.getMessage().startswith("Uvicorn running on")
        )
        # uvloop may hand a new connection's first bytes to its protocol before that protocol
        # can pause reading, and the TLS gate must start TLS on exactly those bytes: asyncio.
        _serve(app, listen, protocol, loop="asyncio")
    else:
        protocol = guarded_protocol(
            listen.header_timeout, listen.max_connections_per_client, listen.http1
        )
        _serve(app, listen, protocol)


def _serve(
    app: ASGIApp, listen: Listen, protocol: type[asyncio.Protocol], loop: str = "auto"
) -> None:
    config = uvicorn.Config(
        app,
        host=listen.host,
        port=listen.port,
        loop=loop,
        http=protocol,
        ws="none",
        log_level=listen.log_level,
        access_log=listen.access_log,
        log_config=None,  # the process's own logging (text or JSON) formats uvicorn's lines too
        lifespan="on",
        timeout_keep_alive=30,
        server_header=False,
        # Forwarded headers are honoured by haul itself, and only with --trust-proxy.
        proxy_headers=False,
    )
    uvicorn.Server(config).run()
