"""Per-upload locks in Redis, for clusters that prefer it to PostgreSQL advisory locks.

A lock is a key with a random token and a lease: the holder renews the lease while it works,
so a node that dies releases its locks when their lease runs out (``lease`` seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from redis.exceptions import LockError

from haul.errors import Locked


class RedisLocker:
    def __init__(self, url: str, *, lease: float = 30.0, prefix: str = "haul:lock:") -> None:
        self.redis = Redis.from_url(url)
        self.lease = lease
        self.prefix = prefix

    @asynccontextmanager
    async def lock(self, upload_id: str, timeout: float) -> AsyncIterator[None]:
        lock = self.redis.lock(
            self.prefix + upload_id,
            timeout=self.lease,
            blocking_timeout=timeout,
            sleep=0.02,
            thread_local=False,
        )
        if not await lock.acquire():
            raise Locked(
                f"upload {upload_id} is busy with another request; retry shortly",
                headers={"Retry-After": "1"},
            )
        renewal = asyncio.create_task(self._renew(lock))
        try:
            yield
        finally:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal
            with contextlib.suppress(LockError):  # the lease ran out: someone else holds it now
                await lock.release()

    async def _renew(self, lock: object) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            await lock.reacquire()  # type: ignore[attr-defined]

    async def forget(self, upload_id: str) -> None:
        """A released lock leaves no key behind."""

    async def close(self) -> None:
        await self.redis.aclose()
