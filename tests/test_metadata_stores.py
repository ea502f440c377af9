"""One conformance suite for every MetadataStore (SQLite, PostgreSQL) and every Locker (flock,
PostgreSQL advisory locks, Redis), run against the real databases."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from haul.core.interfaces import Locker, MetadataStore, Outbox, OutboxEntry
from haul.core.models import ConcatKind, Upload, UploadState
from haul.errors import Locked, UploadExists
from haul.locks.file import FileLocker
from haul.locks.memory import MemoryLocker
from haul.locks.postgres import PostgresLocker
from haul.locks.redis import RedisLocker
from haul.records.memory import MemoryStore
from haul.records.postgres import PostgresStore
from haul.records.sqlite import SQLiteStore


@pytest.fixture(params=[pytest.param("memory", marks=pytest.mark.fast), "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MetadataStore]:
    if request.param == "memory":
        opened: MetadataStore = MemoryStore()
    elif request.param == "sqlite":
        opened = SQLiteStore(tmp_path / "haul.db")
    else:
        opened = PostgresStore(request.getfixturevalue("pg_dsn"))
    await opened.open()
    yield opened
    await opened.close()


def record(upload_id: str, **fields: object) -> Upload:
    values: dict[str, object] = {
        "id": upload_id, "length": 100, "state": UploadState.ACTIVE,
        "created_at": 1000.0, "updated_at": 1000.0, "expires_at": 2000.0,
    }  # fmt: skip
    values.update(fields)
    return Upload(**values)  # type: ignore[arg-type]


async def test_records_round_trip(store: MetadataStore) -> None:
    upload = record(
        "a" * 32, metadata_raw="filename aGkudHh0", owner="alice", expected_sha256="ab" * 32,
        challenge='{"nonce": "00"}', length=None, storage_key="tenant/a",
        request_digest="ef" * 32,
    )  # fmt: skip
    await store.insert(upload)
    assert await store.get("a" * 32) == upload
    upload.length = 5
    upload.state = UploadState.COMPLETE
    upload.sha256 = "cd" * 32
    upload.expires_at = None
    await store.save(upload)
    assert await store.get("a" * 32) == upload
    await store.delete("a" * 32)
    assert await store.get("a" * 32) is None


async def test_an_id_is_inserted_once(store: MetadataStore) -> None:
    await store.insert(record("c" * 32, owner="alice"))
    with pytest.raises(UploadExists):
        await store.insert(record("c" * 32, owner="bob", length=7))
    kept = await store.get("c" * 32)
    assert kept is not None
    assert kept.owner == "alice"
    await store.insert(record("d" * 32))  # the store is still usable after the refusal
    assert await store.get("d" * 32) is not None


async def test_expiry_tombstones_and_waiting_finals(store: MetadataStore) -> None:
    await store.insert(record("1" * 32, expires_at=1500.0))  # expired at 1600
    await store.insert(record("2" * 32, expires_at=1700.0))
    await store.insert(record("3" * 32, state=UploadState.COMPLETE, expires_at=None))
    await store.insert(  # a complete partial no final took: it expires too
        record("4" * 32, state=UploadState.COMPLETE, concat=ConcatKind.PARTIAL, expires_at=1100.0)
    )
    await store.insert(record("5" * 32, state=UploadState.TERMINATED, updated_at=1200.0))
    final = record("6" * 32, concat=ConcatKind.FINAL, parts=("4" * 32, "2" * 32), length=None)
    await store.insert(final)
    expired = {u.id for u in await store.expired(1600.0, 100)}
    assert expired == {"1" * 32, "4" * 32}
    assert len(await store.expired(1600.0, 1)) == 1
    assert [u.id for u in await store.tombstones(1300.0, 100)] == ["5" * 32]
    assert await store.tombstones(1100.0, 100) == []
    assert [u.id for u in await store.finals_waiting_for("4" * 32)] == ["6" * 32]
    assert [u.id for u in await store.finals_listing("2" * 32)] == ["6" * 32]
    many = await store.get_many(["4" * 32, "9" * 32, "6" * 32, "1" * 32])
    assert sorted(many) == ["1" * 32, "4" * 32, "6" * 32]  # the missing one is left out
    assert many["6" * 32].parts == ("4" * 32, "2" * 32)
    assert await store.get_many([]) == {}
    final.state = UploadState.COMPLETE
    await store.save(final)
    assert await store.finals_waiting_for("4" * 32) == []
    assert [u.id for u in await store.finals_listing("4" * 32)] == ["6" * 32]  # any state
    assert await store.finals_listing("1" * 32) == []
    final.state = UploadState.ACTIVE
    await store.save(final)
    assert (await store.get("6" * 32)).parts == ("4" * 32, "2" * 32)  # type: ignore[union-attr]
    assert await store.count_active() == 3  # 1, 2 and the final
    await store.delete("6" * 32)
    assert await store.finals_waiting_for("4" * 32) == []


async def test_many_records_at_once(store: MetadataStore) -> None:
    ids = [f"{n:032x}" for n in range(1, 1202)]  # more than one batch of any reasonable size
    for upload_id in ids:
        await store.insert(record(upload_id))
    found = await store.get_many([*ids, "f" * 32])
    assert sorted(found) == ids


async def test_content_lookup_is_scoped_by_owner(store: MetadataStore) -> None:
    digest = "ef" * 32
    await store.insert(record("7" * 32, state=UploadState.COMPLETE, sha256=digest, owner="bob"))
    await store.insert(record("8" * 32, sha256=digest, owner="carol"))  # not complete
    found = await store.find_complete(digest, 100, "bob")
    assert found is not None
    assert found.id == "7" * 32
    assert await store.find_complete(digest, 100, "carol") is None
    assert await store.find_complete(digest, 101, "bob") is None
    assert (await store.find_complete(digest, 100, None)) is not None


async def test_a_file_is_found_by_its_digest_alone_for_its_owner(store: MetadataStore) -> None:
    digest = "ab" * 32
    complete = {"state": UploadState.COMPLETE, "sha256": digest}
    await store.insert(record("b1" * 16, **complete, owner="dan", concat=ConcatKind.PARTIAL))
    assert await store.find_file(digest, "dan") is None  # a partial is not a file of its own
    await store.insert(record("b2" * 16, **complete, owner="dan", length=12345))
    await store.insert(record("b3" * 16, sha256=digest, owner="erin"))  # not complete
    found = await store.find_file(digest, "dan")
    assert found is not None
    assert found.id == "b2" * 16
    assert await store.find_file(digest, "erin") is None
    assert await store.find_file("cd" * 32, "dan") is None
    await store.insert(record("b4" * 16, **complete, owner="erin", concat=ConcatKind.FINAL))
    assert (await store.find_file(digest, "erin")).id == "b4" * 16  # type: ignore[union-attr]


async def test_usage_counts_what_quotas_need(store: MetadataStore) -> None:
    now = 100_000.0
    await store.insert(record("a1" * 16, owner="o", length=10, created_at=now - 10))
    await store.insert(  # a partial: bytes count, but it is not a file
        record("a2" * 16, owner="o", length=20, concat=ConcatKind.PARTIAL, created_at=now - 5)
    )
    await store.insert(
        record("a3" * 16, owner="o", length=30, state=UploadState.COMPLETE, created_at=now - 7200)
    )
    await store.insert(  # gone: nothing counts
        record("a4" * 16, owner="o", length=40, state=UploadState.EXPIRED, created_at=now - 7200)
    )
    await store.insert(record("a5" * 16, owner="other", length=50, created_at=now))
    usage = await store.usage("o", now)
    assert usage.bytes == 60
    assert usage.active == 1
    assert usage.created_last_hour == 1
    assert usage.oldest_last_hour == now - 10


async def test_listing_pages_one_owners_files(store: MetadataStore) -> None:
    live = (UploadState.ACTIVE, UploadState.COMPLETE)
    # Same creation time for two: the id breaks the tie, so a page never splits them wrongly.
    mine = [
        record("b1" * 16, owner="o", created_at=10.0),
        record("b2" * 16, owner="o", created_at=20.0, state=UploadState.COMPLETE),
        record("b3" * 16, owner="o", created_at=20.0),
        record("b4" * 16, owner="o", created_at=30.0, state=UploadState.COMPLETE),
    ]
    others = [
        record("c1" * 16, owner="other", created_at=15.0),
        record("c2" * 16, owner="o", created_at=16.0, concat=ConcatKind.PARTIAL),
        record("c3" * 16, owner="o", created_at=17.0, state=UploadState.TERMINATED),
    ]
    for upload in [*others, *mine]:
        await store.insert(upload)
    first = await store.listing("o", states=live, limit=3)
    assert [u.id for u in first] == [u.id for u in mine[:3]]
    rest = await store.listing("o", states=live, after=(first[-1].created_at, first[-1].id))
    assert [u.id for u in rest] == [mine[3].id]
    done = await store.listing("o", states=(UploadState.COMPLETE,))
    assert [u.id for u in done] == [mine[1].id, mine[3].id]
    recent = await store.listing("o", states=live, since=20.0)
    assert [u.id for u in recent] == [u.id for u in mine[1:]]
    assert await store.listing("nobody", states=live) == []


async def test_migrations_run_once_when_nodes_start_together(tmp_path: Path, pg_dsn: str) -> None:
    stores = [PostgresStore(pg_dsn) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))  # all migrate at once
    await stores[0].insert(record("b" * 32))
    assert (await stores[3].get("b" * 32)) is not None
    for s in stores:
        await s.close()
    again = PostgresStore(pg_dsn)
    await again.open()  # nothing left to migrate
    assert (await again.get("b" * 32)) is not None
    await again.close()


# -- lockers -------------------------------------------------------------------------------


@pytest.fixture(
    params=[pytest.param("memory", marks=pytest.mark.fast), "file", "postgres", "redis"]
)
async def lockers(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Locker, Locker]]:
    """Two lockers as two nodes would have them, sharing what their kind shares (the memory
    locker serves one process only: its two "nodes" are two requests of one server)."""
    if request.param == "memory":
        shared = MemoryLocker()
        pair: tuple[Locker, Locker] = (shared, shared)
    elif request.param == "file":
        pair = (
            FileLocker(tmp_path / "locks"),
            FileLocker(tmp_path / "locks"),
        )
    elif request.param == "postgres":
        dsn = request.getfixturevalue("pg_dsn")
        pair = (PostgresLocker(dsn), PostgresLocker(dsn))
    else:
        url = request.getfixturevalue("redis_url")
        prefix = f"test:{request.node.name}:"
        pair = (RedisLocker(url, prefix=prefix), RedisLocker(url, prefix=prefix))
    yield pair
    for locker in pair:
        await locker.close()


async def test_a_lock_excludes_other_nodes_until_released(lockers: tuple[Locker, Locker]) -> None:
    node_a, node_b = lockers
    async with node_a.lock("u" * 32, 1):
        started = time.monotonic()
        with pytest.raises(Locked):
            async with node_b.lock("u" * 32, 0.3):
                pytest.fail("two nodes held one upload's lock")
        assert time.monotonic() - started >= 0.25  # it waited before giving up
        async with node_b.lock("v" * 32, 0.3):  # other uploads are not blocked
            pass
    async with node_b.lock("u" * 32, 1):  # free again
        pass


async def test_a_waiting_request_gets_the_lock_when_it_is_released(
    lockers: tuple[Locker, Locker],
) -> None:
    node_a, node_b = lockers
    order: list[str] = []

    async def holder() -> None:
        async with node_a.lock("w" * 32, 1):
            order.append("a in")
            await asyncio.sleep(0.3)
            order.append("a out")

    async def waiter() -> None:
        await asyncio.sleep(0.05)
        async with node_b.lock("w" * 32, 5):
            order.append("b in")

    await asyncio.gather(holder(), waiter())
    assert order == ["a in", "a out", "b in"]


HOLD = """
import asyncio
from pathlib import Path
from haul.locks.file import FileLocker
from haul.locks.postgres import PostgresLocker
from haul.locks.redis import RedisLocker
async def main():
    locker = {make}
    async with locker.lock("d" * 32, 5):
        print("held", flush=True)
        await asyncio.sleep(3600)
asyncio.run(main())
"""


@pytest.mark.parametrize("kind", ["file", "postgres", "redis"])
def test_a_dead_nodes_lock_is_released(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    make: Callable[[], Locker]
    if kind == "file":
        locks = tmp_path / "locks"
        source = f"FileLocker(Path({str(locks)!r}))"
        make = lambda: FileLocker(locks)  # noqa: E731
    elif kind == "postgres":
        dsn = request.getfixturevalue("pg_dsn")
        source = f"PostgresLocker({dsn!r})"
        make = lambda: PostgresLocker(dsn)  # noqa: E731
    else:
        url = request.getfixturevalue("redis_url")
        source = f"RedisLocker({url!r}, lease=1.0, prefix='dead:')"
        make = lambda: RedisLocker(url, lease=1.0, prefix="dead:")  # noqa: E731
    code = HOLD.format(make=source)
    node = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert node.stdout is not None
        assert node.stdout.readline().strip() == "held"

        # One and the same attempt, refused while the node lives and granted once it died.
        # Redis frees a lock when its lease runs out: there the attempt outlasts the lease
        # three times, so while the node lives it is its renewals that keep the lock.
        attempt = 3.0 if kind == "redis" else 0.5

        async def blocked_then_free() -> bool:
            locker = make()  # built like the dead node's
            try:
                with pytest.raises(Locked):
                    async with locker.lock("d" * 32, attempt):
                        pass
                node.kill()  # the node dies holding the lock
                node.wait()
                async with locker.lock("d" * 32, attempt):
                    return True
            finally:
                await locker.close()

        assert asyncio.run(blocked_then_free())
    finally:
        node.kill()


async def test_redis_digest_index_answers_from_redis_and_never_lies(
    tmp_path: Path, redis_url: str
) -> None:
    from redis.asyncio import Redis

    from haul.records.redis_index import RedisDigestIndex

    prefix = f"test:{tmp_path.name}:"
    store = RedisDigestIndex(SQLiteStore(tmp_path / "haul.db"), redis_url, prefix=prefix)
    await store.open()
    redis = Redis.from_url(redis_url)
    try:
        digest = "ab" * 32
        upload = record("c" * 32, owner="olga", sha256=digest)
        await store.insert(upload)
        upload.state = UploadState.COMPLETE
        await store.save(upload)
        assert await redis.get(f"{prefix}olga:{digest}:100") == b"c" * 32
        found = await store.find_complete(digest, 100, "olga")
        assert found is not None
        assert found.id == "c" * 32
        assert await store.find_complete(digest, 100, "someone") is None
        # Two uploads hold that content: the records' own query picks one, and only the Redis
        # entry can make the index answer with the other.
        twin = record("d" * 32, owner="olga", sha256=digest)
        await store.insert(twin)
        twin.state = UploadState.COMPLETE
        await store.store.save(twin)  # past the index: Redis still names the first upload
        by_records = await store.store.find_complete(digest, 100, "olga")
        assert by_records is not None
        named = ({"c" * 32, "d" * 32} - {by_records.id}).pop()
        await redis.set(f"{prefix}olga:{digest}:100", named)
        from_redis = await store.find_complete(digest, 100, "olga")
        assert from_redis is not None
        assert from_redis.id == named
        await store.store.delete(twin.id)
        await redis.set(f"{prefix}olga:{digest}:100", "c" * 32)
        # A stale or forged entry is checked against the records, never trusted.
        await redis.set(f"{prefix}mallory:{digest}:100", "c" * 32)
        assert await store.find_complete(digest, 100, "mallory") is None
        upload.state = UploadState.TERMINATED
        await store.save(upload)
        assert await redis.get(f"{prefix}olga:{digest}:100") is None
        assert await store.find_complete(digest, 100, "olga") is None
    finally:
        await redis.aclose()
        await store.close()


async def test_the_outbox_leases_each_entry_once_and_keeps_each_uploads_order(
    store: MetadataStore,
) -> None:
    assert isinstance(store, Outbox)
    entries = [
        OutboxEntry(f"e{n}", upload, kind, 1000.0 + n, f'{{"n": {n}}}')
        for n, (upload, kind) in enumerate(
            [("u1", "post-create"), ("u2", "post-create"), ("u1", "post-receive"),
             ("u1", "post-finish")]
        )
    ]  # fmt: skip
    for entry in entries:
        await store.outbox_add(entry)
    await store.outbox_add(entries[0])  # written twice: still one entry
    assert await store.outbox_pending() == 4
    # Only each upload's oldest entry is due; a second worker finds them leased.
    first = await store.outbox_claim("a", now=2000.0, lease=30.0, limit=10)
    assert [e.id for e in first] == ["e0", "e1"]
    assert first[0] == entries[0]
    assert await store.outbox_claim("b", now=2001.0, lease=30.0, limit=10) == []
    # A failed delivery waits for its retry time and holds back its upload's later events.
    await store.outbox_retry("e0", "a", next_at=2100.0)
    await store.outbox_retry("e1", "someone else", next_at=2100.0)  # not their lease: no change
    assert await store.outbox_claim("b", now=2020.0, lease=30.0, limit=10) == []
    # At 2100 e0 is due again, and a's lease on e1 ran out (as if a died): b takes both.
    again = await store.outbox_claim("b", now=2100.0, lease=30.0, limit=10)
    assert [(e.id, e.attempts, e.body) for e in again] == [
        ("e0", 1, '{"n": 0}'),
        ("e1", 0, '{"n": 1}'),
    ]
    await store.outbox_done(["e0"])
    await store.outbox_done(["e1"])
    assert [e.id for e in await store.outbox_claim("c", 2101.0, 30.0, 10)] == ["e2"]
    assert await store.outbox_claim("c", 2102.0, 30.0, 10) == []  # e3 waits for e2
    await store.outbox_done(["e2"])
    assert [e.id for e in await store.outbox_claim("c", 2103.0, 30.0, 10)] == ["e3"]
    await store.outbox_done(["e3"])
    assert await store.outbox_pending() == 0


async def test_the_outbox_is_claimed_by_one_of_many_workers_at_once(store: MetadataStore) -> None:
    assert isinstance(store, Outbox)
    for n in range(60):
        await store.outbox_add(OutboxEntry(f"x{n}", f"up{n}", "post-create", 1000.0, "{}"))
    batches = await asyncio.gather(
        *(store.outbox_claim(f"w{n}", 2000.0, 30.0, 7) for n in range(12))
    )
    claimed = [entry.id for batch in batches for entry in batch]
    assert len(claimed) == len(set(claimed)) == 60


async def test_progress_is_taken_once_per_interval_by_all_nodes(store: MetadataStore) -> None:
    assert isinstance(store, Outbox)
    u = "p" * 32
    asked = await asyncio.gather(*(store.progress_due(u, 100.0, 1.0) for _ in range(8)))
    assert asked.count(True) == 1  # eight requests at once: one event
    assert not await store.progress_due(u, 100.9, 1.0)
    assert await store.progress_due(u, 101.0, 1.0)
    assert await store.progress_due("q" * 32, 100.5, 1.0)  # each upload its own
    await store.progress_forget(u)
    assert await store.progress_due(u, 101.2, 1.0)  # forgotten: taken at once again


async def test_pending_digests_are_taken_by_one_verifier_at_a_time(store: MetadataStore) -> None:
    pending = [record(f"{n:032x}", state=UploadState.COMPLETE, expires_at=None,
                      verify_at=100.0 + n) for n in range(3)]  # fmt: skip
    for upload in pending:
        await store.insert(upload)
    await store.insert(record("f" * 32, state=UploadState.COMPLETE, sha256="ab" * 32))
    await store.insert(record("e" * 32, state=UploadState.FAILED, verify_at=50.0))  # gone
    assert (await store.get(pending[0].id)) == pending[0]  # the column round-trips
    assert await store.verify_claim(99.0, 60.0, 10) == []  # none due yet
    first = await store.verify_claim(200.0, 60.0, 2)
    assert [(u.id, u.verify_at) for u in first] == [(pending[0].id, 260.0), (pending[1].id, 260.0)]
    second = await store.verify_claim(201.0, 60.0, 10)  # the leased ones are not taken twice
    assert [u.id for u in second] == [pending[2].id]
    await store.verify_hold(pending[0].id, 400.0)  # its verifier is still reading
    lapsed = await store.verify_claim(300.0, 60.0, 10)  # the others' verifiers died
    assert [u.id for u in lapsed] == [pending[1].id, pending[2].id]
    verified = await store.get(pending[0].id)
    assert verified is not None
    verified.sha256, verified.verify_at = "cd" * 32, None
    await store.save(verified)
    await store.verify_hold(pending[0].id, 999.0)  # no longer pending: nothing to hold
    assert (await store.get(pending[0].id)) == verified
    assert [u.id for u in await store.verify_claim(10_000.0, 60.0, 10)] == [
        pending[1].id, pending[2].id,
    ]  # fmt: skip
    found = await store.find_complete("cd" * 32, 100, None)
    assert found is not None
    assert found.id == pending[0].id


async def test_a_pending_digest_is_taken_by_one_of_many_verifiers_at_once(
    store: MetadataStore,
) -> None:
    for n in range(40):
        await store.insert(record(f"{n:032x}", state=UploadState.COMPLETE, verify_at=1.0))
    batches = await asyncio.gather(*(store.verify_claim(10.0, 60.0, 3) for _ in range(16)))
    claimed = [upload.id for batch in batches for upload in batch]
    assert len(claimed) == len(set(claimed)) == 40


async def test_an_older_sqlite_database_gains_the_pending_digest_column(tmp_path: Path) -> None:
    import sqlite3

    from haul.records.sqlite import MIGRATIONS

    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    for script in MIGRATIONS[:-1]:  # the schema as the release before this column left it
        old.executescript(script)
    old.execute(f"PRAGMA user_version = {len(MIGRATIONS) - 1}")
    old.execute(
        "INSERT INTO uploads (id, length, state, created_at, updated_at, sha256) "
        "VALUES (?, 5, 'complete', 1.0, 1.0, ?)",
        ("a" * 32, "ab" * 32),
    )
    old.commit()
    old.close()
    store = SQLiteStore(path)
    await store.open()
    kept = await store.get("a" * 32)
    assert kept is not None
    assert kept.sha256 == "ab" * 32
    assert kept.verify_at is None
    assert await store.verify_claim(10.0, 60.0, 10) == []  # verified before: nothing pending
    await store.close()
