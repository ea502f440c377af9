"""``haul serve``: logging, a word of warning when the server is open to anyone, then the app
from the composition root under haul's transport."""

from __future__ import annotations

import logging

from haul.compose import build_app
from haul.config import Settings
from haul.transport.server import Listen, run

log = logging.getLogger("haul")


def serve(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _warn_if_open(settings)
    app = build_app(settings)  # first: a setting it cannot serve stops before "serving on"
    scheme = "https" if settings.tls_cert else "http"
    log.info(
        "haul serving on %s://%s:%d%s (data dir %s)",
        scheme,
        settings.host,
        settings.port,
        settings.base_path,
        settings.data_dir.resolve(),
    )
    listen = Listen(
        host=settings.host,
        port=settings.port,
        header_timeout=settings.header_timeout,
        max_connections_per_client=settings.max_connections_per_client,
        tls_cert=settings.tls_cert,
        tls_key=settings.tls_key,
        log_level=settings.log_level,
        access_log=settings.access_log,
    )
    run(app, listen)


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
