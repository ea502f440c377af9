"""``haul serve``: logging, a word of warning when the server is open to anyone, then the app
from the composition root under haul's transport."""

from __future__ import annotations

import ctypes
import logging
import os

from haul.compose import build_app, configure_logging
from haul.config import Settings
from haul.transport.server import Listen, run

log = logging.getLogger("haul")


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
LARGE_BLOCK = 1 << 20


def return_large_buffers() -> None:
    """Have glibc's malloc hand every freed block of 1 MiB or more straight back to the system.
    By default it raises that threshold as large blocks come and go, and then keeps the S3
    writer's part buffers (8 MiB each) in its heap long after they were freed: the peak
    resident size of a server taking a 256 MiB upload in four streams fell from 256 to about
    190 MiB with it (bench/results/s3_profile.md). A MALLOC_MMAP_THRESHOLD_ the operator set
    wins; other C libraries are left as they are."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return
    mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK)


def serve(settings: Settings) -> None:
    return_large_buffers()
    configure_logging(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = build_app(settings)  # a setting no backend can take stops us here, before a word
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
    listen = Listen(
        host=settings.host,
        port=settings.port,
        header_timeout=settings.header_timeout,
        max_connections_per_client=settings.max_connections_per_client,
        tls_cert=settings.tls_cert,
        tls_key=settings.tls_key,
        log_level=settings.log_level,
        access_log=False,  # haul's own access log has the request id, owner and upload id
        http1=settings.http1,
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
