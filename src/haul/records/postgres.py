"""Upload records in PostgreSQL, shared by every node of a cluster (asyncpg, a connection pool).

Same schema and meaning as the SQLite store; migrations are numbered the same way and run
under an advisory lock, so nodes starting together apply each one exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from haul.core.interfaces import OutboxEntry
from haul.core.models import Upload, UploadState, Usage
from haul.errors import UploadExists
from haul.records.rows import (
    COLUMNS,
    GONE_STATES,
    OUTBOX_COLUMNS,
    UPDATABLE,
    entry_values,
    row_to_entry,
    row_to_upload,
    update_values,
    upload_values,
)

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE uploads (
        id text PRIMARY KEY,
        length bigint,
        state text NOT NULL,
        created_at double precision NOT NULL,
        updated_at double precision NOT NULL,
        expires_at double precision,
        metadata text,
        concat text,
        parts text NOT NULL DEFAULT '[]',
        owner text NOT NULL DEFAULT '',
        expected_sha256 text,
        sha256 text,
        challenge text
    );
    CREATE INDEX uploads_expiry ON uploads (state, expires_at);
    CREATE INDEX uploads_updated ON uploads (state, updated_at);
    CREATE TABLE concat_parts (
        final_id text NOT NULL,
        part_id text NOT NULL,
        position integer NOT NULL,
        PRIMARY KEY (final_id, position)
    );
    CREATE INDEX concat_parts_part ON concat_parts (part_id);
    CREATE INDEX uploads_content ON uploads (sha256, length, owner) WHERE state = 'complete';
    CREATE INDEX uploads_owner ON uploads (owner, created_at);
    """,
    """
    CREATE TABLE hook_outbox (
        seq bigserial PRIMARY KEY,
        id text NOT NULL UNIQUE,
        upload_id text NOT NULL,
        type text NOT NULL,
        created_at double precision NOT NULL,
        body text NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        next_at double precision NOT NULL DEFAULT 0,
        lease_owner text NOT NULL DEFAULT '',
        lease_until double precision NOT NULL DEFAULT 0
    );
    CREATE INDEX hook_outbox_upload ON hook_outbox (upload_id, seq);
    """,
    """
    ALTER TABLE uploads ADD COLUMN storage_key text;
    ALTER TABLE uploads ADD COLUMN request_digest text;
    CREATE TABLE hook_progress (upload_id text PRIMARY KEY, at double precision NOT NULL);
    """,
    """
    ALTER TABLE uploads ADD COLUMN verify_at double precision;
    CREATE INDEX uploads_verify ON uploads (verify_at) WHERE verify_at IS NOT NULL;
    """,
)
# Per upload only the oldest entry left may be claimed: its events leave in order. Rows another
# node is claiming at this moment are skipped, not waited for; the lease then keeps them its own.
_CLAIM = f"""
    WITH due AS (
        SELECT seq FROM hook_outbox o
        WHERE next_at <= $1 AND lease_until <= $1
          AND NOT EXISTS (
              SELECT 1 FROM hook_outbox e WHERE e.upload_id = o.upload_id AND e.seq < o.seq
          )
        ORDER BY seq LIMIT $2
        FOR UPDATE SKIP LOCKED
    )
    UPDATE hook_outbox h SET lease_owner = $3, lease_until = $4 FROM due WHERE h.seq = due.seq
    RETURNING h.seq, {", ".join("h." + c.strip() for c in OUTBOX_COLUMNS.split(","))}
"""
_MIGRATION_LOCK = 0x6861756C  # "haul": one node migrates at a time
_UPDATE = (
    f"UPDATE uploads SET {', '.join(f'{c}=${n}' for n, c in enumerate(UPDATABLE, 1))} "
    f"WHERE id=${len(UPDATABLE) + 1}"
)


# Rows another node is claiming at this moment are skipped, not waited for.
_VERIFY_CLAIM = f"""
    WITH due AS (
        SELECT id FROM uploads
        WHERE verify_at IS NOT NULL AND verify_at <= $2 AND state = 'complete'
        ORDER BY verify_at LIMIT $3
        FOR UPDATE SKIP LOCKED
    )
    UPDATE uploads u SET verify_at = $1 FROM due WHERE u.id = due.id
    RETURNING {", ".join("u." + c.strip() for c in COLUMNS.split(","))}
"""


# Taken when no node took one within the interval: one statement, so nodes cannot both take it.
_PROGRESS = (
    "INSERT INTO hook_progress (upload_id, at) VALUES ($1, $2) ON CONFLICT (upload_id) "
    "DO UPDATE SET at = excluded.at WHERE $2 - hook_progress.at >= $3 RETURNING upload_id"
)


class PostgresStore:
    def __init__(self, dsn: str, *, max_connections: int = 10) -> None:
        self.dsn = dsn
        self.max_connections = max_connections
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the PostgreSQL store is not open")
        return self._pool

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=self.max_connections)
        await self._migrate()

    async def _migrate(self) -> None:
        async with self.pool.acquire() as db, db.transaction():
            await db.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await db.execute("CREATE TABLE IF NOT EXISTS haul_schema (version integer NOT NULL)")
            version = await db.fetchval("SELECT max(version) FROM haul_schema") or 0
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                await db.execute(script)
                await db.execute("INSERT INTO haul_schema (version) VALUES ($1)", number)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def insert(self, upload: Upload) -> None:
        async with self.pool.acquire() as db, db.transaction():
            try:
                await db.execute(
                    f"INSERT INTO uploads ({COLUMNS}) "
                    "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16)",
                    *upload_values(upload),
                )
            except asyncpg.UniqueViolationError:
                raise UploadExists(upload.id) from None
            await db.executemany(
                "INSERT INTO concat_parts (final_id, part_id, position) VALUES ($1, $2, $3)",
                [(upload.id, part, i) for i, part in enumerate(upload.parts)],
            )

    async def get(self, upload_id: str) -> Upload | None:
        row = await self.pool.fetchrow(f"SELECT {COLUMNS} FROM uploads WHERE id = $1", upload_id)
        return row_to_upload(row) if row else None

    async def get_many(self, upload_ids: Sequence[str]) -> dict[str, Upload]:
        found = await self._select("id = ANY($1::text[])", list(upload_ids))
        return {upload.id: upload for upload in found}

    async def save(self, upload: Upload) -> None:
        await self.pool.execute(_UPDATE, *update_values(upload))

    async def delete(self, upload_id: str) -> None:
        async with self.pool.acquire() as db, db.transaction():
            await db.execute("DELETE FROM uploads WHERE id = $1", upload_id)
            await db.execute("DELETE FROM concat_parts WHERE final_id = $1", upload_id)

    async def _select(self, where: str, *params: Any) -> list[Upload]:
        rows = await self.pool.fetch(f"SELECT {COLUMNS} FROM uploads WHERE {where}", *params)
        return [row_to_upload(row) for row in rows]

    async def expired(self, now: float, limit: int) -> list[Upload]:
        return await self._select(
            "state IN ('active', 'complete') AND expires_at IS NOT NULL AND expires_at < $1 "
            "LIMIT $2",
            now,
            limit,
        )

    async def tombstones(self, before: float, limit: int) -> list[Upload]:
        return await self._select(
            "state = ANY($1::text[]) AND updated_at < $2 LIMIT $3", list(GONE_STATES), before, limit
        )

    async def finals_waiting_for(self, part_id: str) -> list[Upload]:
        return await self._select(
            "state = 'active' AND id IN (SELECT final_id FROM concat_parts WHERE part_id = $1)",
            part_id,
        )

    async def finals_listing(self, part_id: str) -> list[Upload]:
        return await self._select(
            "id IN (SELECT final_id FROM concat_parts WHERE part_id = $1)",
            part_id,
        )

    async def find_complete(self, sha256: str, length: int, owner: str | None) -> Upload | None:
        if owner is None:
            found = await self._select(
                "sha256 = $1 AND length = $2 AND state = 'complete' LIMIT 1", sha256, length
            )
        else:
            found = await self._select(
                "sha256 = $1 AND length = $2 AND owner = $3 AND state = 'complete' LIMIT 1",
                sha256,
                length,
                owner,
            )
        return found[0] if found else None

    async def verify_claim(self, now: float, lease: float, limit: int) -> list[Upload]:
        rows = await self.pool.fetch(_VERIFY_CLAIM, now + lease, now, limit)
        return [row_to_upload(row) for row in rows]

    async def verify_hold(self, upload_id: str, until: float) -> None:
        await self.pool.execute(
            "UPDATE uploads SET verify_at = $1 WHERE id = $2 AND verify_at IS NOT NULL",
            until,
            upload_id,
        )

    async def find_file(self, sha256: str, owner: str) -> Upload | None:
        found = await self._select(
            "sha256 = $1 AND owner = $2 AND state = 'complete'"
            " AND concat IS DISTINCT FROM 'partial' LIMIT 1",
            sha256,
            owner,
        )
        return found[0] if found else None

    async def usage(self, owner: str, now: float) -> Usage:
        row = await self.pool.fetchrow(
            """
            SELECT
              coalesce(sum(coalesce(length, 0)) FILTER (WHERE state IN ('active', 'complete')
                           AND concat IS DISTINCT FROM 'final'), 0) AS bytes,
              count(*) FILTER (WHERE state = 'active' AND concat IS DISTINCT FROM 'partial')
                AS active,
              count(*) FILTER (WHERE created_at > $1 AND concat IS DISTINCT FROM 'partial')
                AS recent,
              min(created_at) FILTER (WHERE created_at > $1 AND concat IS DISTINCT FROM 'partial')
                AS oldest
            FROM uploads WHERE owner = $2
            """,
            now - 3600,
            owner,
        )
        assert row is not None
        return Usage(int(row["bytes"]), int(row["active"]), int(row["recent"]), row["oldest"])

    async def count_active(self) -> int:
        return int(await self.pool.fetchval("SELECT count(*) FROM uploads WHERE state = 'active'"))

    async def listing(
        self,
        owner: str,
        *,
        states: Sequence[UploadState],
        since: float | None = None,
        after: tuple[float, str] | None = None,
        limit: int = 100,
    ) -> list[Upload]:
        where = "owner = $1 AND state = ANY($2::text[]) AND concat IS DISTINCT FROM 'partial'"
        params: list[Any] = [owner, [s.value for s in states]]
        if since is not None:
            params.append(since)
            where += f" AND created_at >= ${len(params)}"
        if after is not None:
            params += after
            where += f" AND (created_at, id) > (${len(params) - 1}, ${len(params)})"
        params.append(limit)
        return await self._select(f"{where} ORDER BY created_at, id LIMIT ${len(params)}", *params)

    async def progress_due(self, upload_id: str, at: float, interval: float) -> bool:
        taken = await self.pool.fetchval(_PROGRESS, upload_id, at, interval)
        return taken is not None

    async def progress_forget(self, upload_id: str) -> None:
        await self.pool.execute("DELETE FROM hook_progress WHERE upload_id = $1", upload_id)

    async def outbox_add(self, entry: OutboxEntry) -> None:
        await self.pool.execute(
            f"INSERT INTO hook_outbox ({OUTBOX_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6) "
            "ON CONFLICT (id) DO NOTHING",
            *entry_values(entry),
        )

    async def outbox_claim(
        self, worker: str, now: float, lease: float, limit: int
    ) -> list[OutboxEntry]:
        rows = await self.pool.fetch(_CLAIM, now, limit, worker, now + lease)
        return [row_to_entry(tuple(row)[1:]) for row in sorted(rows, key=lambda r: r["seq"])]

    async def outbox_done(self, entry_ids: Sequence[str]) -> None:
        await self.pool.execute("DELETE FROM hook_outbox WHERE id = ANY($1::text[])", entry_ids)

    async def outbox_retry(self, entry_id: str, worker: str, next_at: float) -> None:
        await self.pool.execute(
            "UPDATE hook_outbox SET attempts = attempts + 1, next_at = $1, lease_owner = '', "
            "lease_until = 0 WHERE id = $2 AND lease_owner = $3",
            next_at,
            entry_id,
            worker,
        )

    async def outbox_pending(self) -> int:
        return int(await self.pool.fetchval("SELECT count(*) FROM hook_outbox"))
