"""Upload records in SQLite (WAL mode, so several server processes can share one data dir)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

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

_UPDATE = f"UPDATE uploads SET {', '.join(f'{c}=?' for c in UPDATABLE)} WHERE id=?"

# Each entry migrates the schema from version N to N+1; PRAGMA user_version records N.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE uploads (
        id TEXT PRIMARY KEY,
        length INTEGER,
        state TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        expires_at REAL,
        metadata TEXT,
        concat TEXT,
        parts TEXT NOT NULL DEFAULT '[]',
        owner TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX uploads_expiry ON uploads (state, expires_at);
    CREATE INDEX uploads_updated ON uploads (state, updated_at);
    CREATE TABLE concat_parts (
        final_id TEXT NOT NULL,
        part_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        PRIMARY KEY (final_id, position)
    );
    CREATE INDEX concat_parts_part ON concat_parts (part_id);
    """,
    """
    ALTER TABLE uploads ADD COLUMN expected_sha256 TEXT;
    ALTER TABLE uploads ADD COLUMN sha256 TEXT;
    """,
    """
    CREATE INDEX uploads_content ON uploads (sha256, length, owner) WHERE state = 'complete';
    """,
    """
    ALTER TABLE uploads ADD COLUMN challenge TEXT;
    """,
    """
    CREATE INDEX uploads_owner ON uploads (owner, created_at);
    """,
    """
    CREATE TABLE hook_outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        upload_id TEXT NOT NULL,
        type TEXT NOT NULL,
        created_at REAL NOT NULL,
        body TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at REAL NOT NULL DEFAULT 0,
        lease_owner TEXT NOT NULL DEFAULT '',
        lease_until REAL NOT NULL DEFAULT 0
    );
    CREATE INDEX hook_outbox_upload ON hook_outbox (upload_id, seq);
    """,
    """
    ALTER TABLE uploads ADD COLUMN storage_key TEXT;
    ALTER TABLE uploads ADD COLUMN request_digest TEXT;
    CREATE TABLE hook_progress (upload_id TEXT PRIMARY KEY, at REAL NOT NULL);
    """,
    """
    ALTER TABLE uploads ADD COLUMN verify_at REAL;
    CREATE INDEX uploads_verify ON uploads (verify_at) WHERE verify_at IS NOT NULL;
    """,
)
# Per upload only the oldest entry left may be claimed: its events leave in order.
_CLAIM = f"""
    UPDATE hook_outbox SET lease_owner = ?, lease_until = ? WHERE seq IN (
        SELECT seq FROM hook_outbox o
        WHERE next_at <= ? AND lease_until <= ?
          AND NOT EXISTS (
              SELECT 1 FROM hook_outbox e WHERE e.upload_id = o.upload_id AND e.seq < o.seq
          )
        ORDER BY seq LIMIT ?
    )
    RETURNING seq, {OUTBOX_COLUMNS}
"""


# One statement: two verifiers, in any process, never take the same upload.
_VERIFY_CLAIM = f"""
    UPDATE uploads SET verify_at = ? WHERE id IN (
        SELECT id FROM uploads
        WHERE verify_at IS NOT NULL AND verify_at <= ? AND state = 'complete'
        ORDER BY verify_at LIMIT ?
    )
    RETURNING {COLUMNS}
"""


# Taken when no node took one within the interval: one statement, so nodes cannot both take it.
_PROGRESS = (
    "INSERT INTO hook_progress (upload_id, at) VALUES (?1, ?2) ON CONFLICT (upload_id) "
    "DO UPDATE SET at = excluded.at WHERE ?2 - hook_progress.at >= ?3"
)


class SQLiteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        # One connection is shared by every request: writes take turns so that a statement
        # from one request can never land inside another request's open transaction.
        self._writing = asyncio.Lock()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("the SQLite store is not open")
        return self._db

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path, isolation_level=None)
        await self.db.execute("PRAGMA busy_timeout = 30000")
        await self.db.execute("PRAGMA journal_mode = WAL")
        await self.db.execute("PRAGMA synchronous = NORMAL")
        await self._migrate()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._writing:
            await self.db.execute("BEGIN IMMEDIATE")  # other processes wait (busy_timeout)
            try:
                yield self.db
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise
            await self.db.execute("COMMIT")

    async def _migrate(self) -> None:
        async with self._transaction() as db:
            async with db.execute("PRAGMA user_version") as cursor:
                row = await cursor.fetchone()
            version = row[0] if row else 0
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in filter(str.strip, script.split(";")):
                    await db.execute(statement)
                await db.execute(f"PRAGMA user_version = {number}")

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def insert(self, upload: Upload) -> None:
        async with self._transaction() as db:
            try:
                await db.execute(
                    f"INSERT INTO uploads ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    upload_values(upload),
                )
            except sqlite3.IntegrityError:
                raise UploadExists(upload.id) from None
            await db.executemany(
                "INSERT INTO concat_parts (final_id, part_id, position) VALUES (?,?,?)",
                [(upload.id, part, i) for i, part in enumerate(upload.parts)],
            )

    async def get(self, upload_id: str) -> Upload | None:
        async with self.db.execute(
            f"SELECT {COLUMNS} FROM uploads WHERE id = ?", (upload_id,)
        ) as cursor:
            row = await cursor.fetchone()
        return row_to_upload(row) if row else None

    async def get_many(self, upload_ids: Sequence[str]) -> dict[str, Upload]:
        found: dict[str, Upload] = {}
        for start in range(0, len(upload_ids), 500):  # well under SQLite's variable limit
            batch = tuple(upload_ids[start : start + 500])
            marks = ",".join("?" * len(batch))
            found.update((u.id, u) for u in await self._select(f"id IN ({marks})", batch))
        return found

    async def save(self, upload: Upload) -> None:
        async with self._writing:
            await self.db.execute(_UPDATE, update_values(upload))

    async def delete(self, upload_id: str) -> None:
        async with self._transaction() as db:
            await db.execute("DELETE FROM uploads WHERE id = ?", (upload_id,))
            await db.execute("DELETE FROM concat_parts WHERE final_id = ?", (upload_id,))

    async def _select(self, where: str, params: tuple[Any, ...]) -> list[Upload]:
        async with self.db.execute(f"SELECT {COLUMNS} FROM uploads WHERE {where}", params) as cur:
            return [row_to_upload(row) for row in await cur.fetchall()]

    async def expired(self, now: float, limit: int) -> list[Upload]:
        return await self._select(
            "state IN ('active', 'complete') AND expires_at IS NOT NULL AND expires_at < ? LIMIT ?",
            (now, limit),
        )

    async def tombstones(self, before: float, limit: int) -> list[Upload]:
        marks = ",".join("?" * len(GONE_STATES))
        return await self._select(
            f"state IN ({marks}) AND updated_at < ? LIMIT ?", (*GONE_STATES, before, limit)
        )

    async def finals_waiting_for(self, part_id: str) -> list[Upload]:
        return await self._select(
            "state = 'active' AND id IN (SELECT final_id FROM concat_parts WHERE part_id = ?)",
            (part_id,),
        )

    async def finals_listing(self, part_id: str) -> list[Upload]:
        return await self._select(
            "id IN (SELECT final_id FROM concat_parts WHERE part_id = ?)",
            (part_id,),
        )

    async def find_complete(self, sha256: str, length: int, owner: str | None) -> Upload | None:
        if owner is None:
            found = await self._select(
                "sha256 = ? AND length = ? AND state = 'complete' LIMIT 1", (sha256, length)
            )
        else:
            found = await self._select(
                "sha256 = ? AND length = ? AND owner = ? AND state = 'complete' LIMIT 1",
                (sha256, length, owner),
            )
        return found[0] if found else None

    async def verify_claim(self, now: float, lease: float, limit: int) -> list[Upload]:
        async with self._writing, self.db.execute(_VERIFY_CLAIM, (now + lease, now, limit)) as cur:
            return [row_to_upload(row) for row in await cur.fetchall()]

    async def verify_hold(self, upload_id: str, until: float) -> None:
        async with self._writing:
            await self.db.execute(
                "UPDATE uploads SET verify_at = ? WHERE id = ? AND verify_at IS NOT NULL",
                (until, upload_id),
            )

    async def find_file(self, sha256: str, owner: str) -> Upload | None:
        found = await self._select(
            "sha256 = ? AND owner = ? AND state = 'complete' AND concat IS NOT 'partial' LIMIT 1",
            (sha256, owner),
        )
        return found[0] if found else None

    async def usage(self, owner: str, now: float) -> Usage:
        query = """
            SELECT
              coalesce(sum(CASE WHEN state IN ('active', 'complete') AND concat IS NOT 'final'
                           THEN coalesce(length, 0) END), 0),
              count(CASE WHEN state = 'active' AND concat IS NOT 'partial' THEN 1 END),
              count(CASE WHEN created_at > ? AND concat IS NOT 'partial' THEN 1 END),
              min(CASE WHEN created_at > ? AND concat IS NOT 'partial' THEN created_at END)
            FROM uploads WHERE owner = ?
        """
        hour_ago = now - 3600
        async with self.db.execute(query, (hour_ago, hour_ago, owner)) as cur:
            row = await cur.fetchone()
        assert row is not None
        return Usage(int(row[0]), int(row[1]), int(row[2]), row[3])

    async def count_active(self) -> int:
        async with self.db.execute("SELECT count(*) FROM uploads WHERE state = 'active'") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def listing(
        self,
        owner: str,
        *,
        states: Sequence[UploadState],
        since: float | None = None,
        after: tuple[float, str] | None = None,
        limit: int = 100,
    ) -> list[Upload]:
        marks = ",".join("?" * len(states))
        where = f"owner = ? AND state IN ({marks}) AND concat IS NOT 'partial'"
        params: list[Any] = [owner, *(s.value for s in states)]
        if since is not None:
            where += " AND created_at >= ?"
            params.append(since)
        if after is not None:
            where += " AND (created_at, id) > (?, ?)"
            params += after
        return await self._select(f"{where} ORDER BY created_at, id LIMIT ?", (*params, limit))

    async def progress_due(self, upload_id: str, at: float, interval: float) -> bool:
        async with self._writing, self.db.execute(_PROGRESS, (upload_id, at, interval)) as cur:
            return cur.rowcount == 1

    async def progress_forget(self, upload_id: str) -> None:
        async with self._writing:
            await self.db.execute("DELETE FROM hook_progress WHERE upload_id = ?", (upload_id,))

    async def outbox_add(self, entry: OutboxEntry) -> None:
        async with self._writing:
            await self.db.execute(
                f"INSERT OR IGNORE INTO hook_outbox ({OUTBOX_COLUMNS}) VALUES (?,?,?,?,?,?)",
                entry_values(entry),
            )

    async def outbox_claim(
        self, worker: str, now: float, lease: float, limit: int
    ) -> list[OutboxEntry]:
        claim = (worker, now + lease, now, now, limit)
        # One statement: atomic, across processes too.
        async with self._writing, self.db.execute(_CLAIM, claim) as cursor:
            rows = sorted(await cursor.fetchall())
        return [row_to_entry(row[1:]) for row in rows]

    async def outbox_done(self, entry_ids: Sequence[str]) -> None:
        async with self._writing:
            for start in range(0, len(entry_ids), 500):  # well under SQLite's variable limit
                batch = tuple(entry_ids[start : start + 500])
                marks = ",".join("?" * len(batch))
                await self.db.execute(f"DELETE FROM hook_outbox WHERE id IN ({marks})", batch)

    async def outbox_retry(self, entry_id: str, worker: str, next_at: float) -> None:
        async with self._writing:
            await self.db.execute(
                "UPDATE hook_outbox SET attempts = attempts + 1, next_at = ?, lease_owner = '', "
                "lease_until = 0 WHERE id = ? AND lease_owner = ?",
                (next_at, entry_id, worker),
            )

    async def outbox_pending(self) -> int:
        async with self.db.execute("SELECT count(*) FROM hook_outbox") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0
