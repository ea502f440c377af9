"""Per-upload locks within one process (asyncio locks): for tests and a single-process server
on storage no other process shares."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from haul.errors import Locked


class MemoryLocker:
    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    @asynccontextmanager
    async def lock(self, upload_id: str, timeout: float) -> AsyncIterator[None]:
        lock = self._locks.setdefault(upload_id, asyncio.Lock())
        try:
            await asyncio.wait_for(lock.acquire(), timeout)
        except TimeoutError:
            raise Locked(
                f"upload {upload_id} is busy with another request; retry shortly",
                headers={"Retry-After": "1"},
            ) from None
        try:
            yield
        finally:
            lock.release()

    async def forget(self, upload_id: str) -> None:
        lock = self._locks.get(upload_id)
        if lock is not None and not lock.locked():
            del self._locks[upload_id]

    async def close(self) -> None:
        """Nothing to release."""
