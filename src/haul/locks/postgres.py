"""Per-upload locks as PostgreSQL advisory locks, for nodes that share one database.

A lock lives in the database session that took it, so a node that dies (its connections
close) releases every lock it held at once. Waiting happens in the server (lock_timeout),
not in a polling loop.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from haul.errors import Locked


def lock_key(upload_id: str) -> int:
    """A signed 64-bit key for an upload id (advisory locks are keyed by bigint)."""
    return int.from_bytes(hashlib.sha256(upload_id.encode()).digest()[:8], "big", signed=True)


class PostgresLocker:
    def __init__(self, dsn: str, *, max_connections: int = 40) -> None:
        self.dsn = dsn
        self.max_connections = max_connections
        self._pool: asyncpg.Pool | None = None

    async def _connections(self) -> asyncpg.Pool:
        if self._pool is None:
            # Created on first use: the pool belongs to the event loop that serves requests.
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=1, max_size=self.max_connections
            )
        return self._pool

    @asynccontextmanager
    async def lock(self, upload_id: str, timeout: float) -> AsyncIterator[None]:
        key = lock_key(upload_id)
        pool = await self._connections()
        async with pool.acquire() as db:
            await db.execute(
                "SELECT set_config('lock_timeout', $1, false)", f"{int(timeout * 1000)}ms"
            )
            try:
                await db.execute("SELECT pg_advisory_lock($1)", key)
            except asyncpg.LockNotAvailableError:
                raise Locked(
                    f"upload {upload_id} is busy with another request; retry shortly",
                    headers={"Retry-After": "1"},
                ) from None
            try:
                yield
            finally:
                await db.execute("SELECT pg_advisory_unlock($1)", key)

    async def forget(self, upload_id: str) -> None:
        """Advisory locks leave nothing behind."""

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
