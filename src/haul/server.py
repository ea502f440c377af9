"""Run the ASGI application under uvicorn."""

from __future__ import annotations

import logging

import uvicorn

from haul.config import Settings
from haul.http.app import create_app


def serve(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
        lifespan="on",
        timeout_keep_alive=30,
        server_header=False,
        # Forwarded headers are honoured by haul itself, and only with --trust-proxy.
        proxy_headers=False,
    )
    logging.getLogger("haul").info(
        "haul serving on http://%s:%d%s (data dir %s)",
        settings.host,
        settings.port,
        settings.base_path,
        settings.data_dir.resolve(),
    )
    uvicorn.Server(config).run()
