"""The in-process test seam: the whole upload service, and the HTTP app over it, on in-memory
backends. No socket, no disk, no subprocess: these tests run in milliseconds and guard the
core's rules; the real-server tests stay the proof that the parts work together."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx

from haul.config import Settings, load_settings
from haul.core.events import Event
from haul.core.lifecycle import Limits
from haul.core.service import UploadService
from haul.http.app import create_app
from haul.locks.memory import MemoryLocker
from haul.records.memory import MemoryStore
from haul.storage.memory import MemoryStorage


@dataclass
class Heard:
    """Every event the service published, in order."""

    events: list[Event] = field(default_factory=list)

    async def __call__(self, event: Event) -> None:
        self.events.append(event)

    def kinds(self, upload_id: str | None = None) -> list[str]:
        return [type(e).__name__ for e in self.events if upload_id in (None, e.upload.id)]


def memory_service(limits: Limits | None = None, **options: object) -> UploadService:
    return UploadService(
        MemoryStorage(),
        MemoryStore(),
        MemoryLocker(),
        limits or Limits(),
        **options,  # type: ignore[arg-type]
    )


async def body(*blocks: bytes) -> AsyncIterator[bytes]:
    for block in blocks:
        yield block


def memory_settings(**overrides: object) -> Settings:
    return load_settings(environ={}, overrides={"sweep_interval": "0", **overrides})


def asgi_client(service: UploadService, settings: Settings | None = None) -> httpx.AsyncClient:
    """An HTTP client whose requests go straight into the ASGI app: no socket."""
    app = create_app(settings or memory_settings(), service)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://haul.test")
