"""Deferred verification in-process: an upload whose SHA-256 only a read-back can give
completes with it pending; the background verifier settles it. Two services over the same
backends stand for two nodes (the second has no running digest of the first's bytes)."""

from __future__ import annotations

import hashlib
import os

import pytest

from haul.core import events
from haul.core.lifecycle import Limits
from haul.core.models import UploadState
from haul.core.service import UploadService
from haul.core.verifier import Verifier
from haul.errors import DigestMismatch, Gone
from haul.locks.memory import MemoryLocker
from haul.records.memory import MemoryStore
from haul.storage.memory import MemoryStorage
from tests.inprocess import Heard, body

pytestmark = pytest.mark.fast

LATER = Limits(verify_later=True)


def nodes(limits: Limits = LATER) -> tuple[UploadService, UploadService, Heard]:
    storage, store, locker = MemoryStorage(), MemoryStore(), MemoryLocker()
    one = UploadService(storage, store, locker, limits)
    two = UploadService(storage, store, locker, limits)
    heard = Heard()
    one.events.subscribe(heard)
    two.events.subscribe(heard)
    return one, two, heard


async def split_upload(
    one: UploadService, two: UploadService, data: bytes, *, declared: str | None = None
) -> str:
    """The first half sent to one node, the rest to the other, which completes it."""
    upload = await one.create(length=len(data), owner="alice", expected_sha256=declared)
    half = len(data) // 2
    await one.append(upload.id, 0, body(data[:half]), owner="alice")
    done = await two.append(upload.id, half, body(data[half:]), owner="alice")
    assert done.complete
    return upload.id


async def test_a_digest_needing_a_read_back_is_verified_later_and_shared_only_then() -> None:
    one, two, heard = nodes()
    data = os.urandom(300_000)
    digest = hashlib.sha256(data).hexdigest()
    upload_id = await split_upload(one, two, data)
    pending = await two.status(upload_id, owner="alice")
    assert pending.complete
    assert pending.sha256 is None
    assert pending.digest_pending
    assert "Finished" not in heard.kinds(upload_id)  # told once its digest is checked
    assert await two.store.find_complete(digest, len(data), "alice") is None
    # The same content declared again is sent again: pending content is never reused.
    again = await one.create(length=len(data), owner="alice", expected_sha256=digest)
    assert not again.complete
    assert await one.verify_pending() == 1
    verified = await one.status(upload_id, owner="alice")
    assert verified.sha256 == digest
    assert not verified.digest_pending
    assert await two.verify_pending() == 0  # nothing left
    [finished] = [e for e in heard.events if isinstance(e, events.Finished)]
    assert finished.upload.sha256 == digest
    assert finished.upload.offset == len(data)
    instant = await two.create(length=len(data), owner="alice", expected_sha256=digest)
    assert instant.complete  # shared, now that its digest is verified


async def test_a_mismatch_found_later_fails_the_upload_and_never_shares_it() -> None:
    one, two, heard = nodes()
    data = os.urandom(200_001)
    digest = hashlib.sha256(data).hexdigest()
    upload_id = await split_upload(one, two, data, declared="ab" * 32)
    assert (await one.status(upload_id, owner="alice")).complete  # completes first
    assert await two.verify_pending() == 1
    record = await one.store.get(upload_id)
    assert record is not None
    assert record.state is UploadState.FAILED
    assert not record.digest_pending
    rejected = [e for e in heard.events if isinstance(e, events.Rejected)]
    assert [(e.upload.id, e.reason) for e in rejected] == [(upload_id, "digest")]
    assert "Finished" not in heard.kinds(upload_id)  # never told as finished
    with pytest.raises(Gone, match="failed verification"):
        await one.status(upload_id, owner="alice")
    for declared in (digest, "ab" * 32):
        assert await one.store.find_complete(declared, len(data), None) is None
        assert not (await one.create(length=len(data), owner="alice",
                                     expected_sha256=declared)).complete  # fmt: skip
    assert [u async for u in one.storage.stored_ids() if u[0] == upload_id] == []


async def test_the_running_digest_of_this_process_verifies_at_once() -> None:
    one, _, _ = nodes()
    data = os.urandom(100_000)
    upload = await one.create(length=len(data), owner="alice")
    await one.append(upload.id, 0, body(data[:5]), owner="alice")
    done = await one.append(upload.id, 5, body(data[5:]), owner="alice")
    assert done.sha256 == hashlib.sha256(data).hexdigest()
    assert not done.digest_pending
    assert await one.verify_pending() == 0


async def test_without_verify_later_the_read_back_happens_before_completion() -> None:
    one, two, _ = nodes(Limits())
    data = os.urandom(100_000)
    upload = await one.create(length=len(data), owner="alice", expected_sha256="cd" * 32)
    await one.append(upload.id, 0, body(data[:10]), owner="alice")
    with pytest.raises(DigestMismatch):  # the completing request is refused, as always
        await two.append(upload.id, 10, body(data[10:]), owner="alice")
    record = await one.store.get(upload.id)
    assert record is not None
    assert record.state is UploadState.FAILED


async def test_an_upload_deleted_before_it_was_verified_is_left_alone() -> None:
    one, two, heard = nodes()
    upload_id = await split_upload(one, two, os.urandom(50_000), declared="ef" * 32)
    await one.terminate(upload_id, owner="alice")
    assert await two.verify_pending() == 0
    record = await two.store.get(upload_id)
    assert record is not None
    assert record.state is UploadState.TERMINATED
    assert "Rejected" not in heard.kinds(upload_id)


async def test_a_final_upload_whose_partials_were_not_hashed_in_order_is_verified_later() -> None:
    one, _, heard = nodes()
    pieces = [os.urandom(70_000), os.urandom(30_001)]
    partials = []
    for piece in pieces:
        partial = await one.create(length=len(piece), partial=True, owner="alice")
        await one.append(partial.id, 0, body(piece), owner="alice")
        partials.append(partial.id)
    final = await one.create_final(partials, owner="alice")
    assert final.complete
    assert final.digest_pending  # no partial was tagged: only a read-back can tell
    assert await one.verify_pending() == 1
    verified = await one.status(final.id, owner="alice")
    assert verified.sha256 == hashlib.sha256(b"".join(pieces)).hexdigest()
    assert "Finished" in heard.kinds(final.id)


async def test_a_verifier_reading_a_long_upload_keeps_its_lease(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    one, two, _ = nodes()
    data = os.urandom(90_000)
    upload = await one.create(length=len(data), owner="alice")
    for start in range(0, 60_000, 20_000):  # stored as several blocks, read one by one
        await one.append(upload.id, start, body(data[start : start + 20_000]), owner="alice")
    await two.append(upload.id, 60_000, body(data[60_000:]), owner="alice")
    held: list[float] = []
    keep = two.store.verify_hold

    async def hold(upload_id: str, until: float) -> None:
        held.append(until)
        await keep(upload_id, until)

    monkeypatch.setattr(two.store, "verify_hold", hold)
    # A lease so short that every block read renews it.
    verifier = Verifier(two._life, two._completion, lease=0.0)
    assert await verifier.verify_pending() == 1
    assert len(held) >= 3
    record = await two.store.get(upload.id)
    assert record is not None
    assert record.sha256 == hashlib.sha256(data).hexdigest()
    assert not record.digest_pending
