"""The upload service's rules, in-process over in-memory backends (the fast tier)."""

from __future__ import annotations

import asyncio
import hashlib
import time

import pytest

from haul.core import events
from haul.core.lifecycle import Limits
from haul.core.models import UploadState
from haul.errors import (
    ChecksumMismatch,
    DigestMismatch,
    Gone,
    NotFound,
    OffsetMismatch,
    ProofRejected,
)
from haul.wire.possession import Challenge, answer
from tests.inprocess import Heard, body, memory_service

pytestmark = pytest.mark.fast


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_an_upload_in_two_requests_tells_each_step() -> None:
    service = memory_service()
    heard = Heard()
    service.events.subscribe(heard)
    upload = await service.create(length=11, metadata_raw="filename aGVsbG8=")
    first = await service.append(upload.id, 0, body(b"hello"))
    assert (first.offset, first.state) == (5, UploadState.ACTIVE)
    done = await service.append(upload.id, 5, body(b" wor", b"ld"))
    assert done.complete
    assert done.sha256 == sha(b"hello world")
    assert heard.kinds() == ["Created", "Progress", "Progress", "Finished"]
    assert [e.upload.offset for e in heard.events] == [0, 5, 11, 11]
    # Events carry snapshots: later changes to the record do not reach them.
    assert heard.events[0].upload.state is UploadState.ACTIVE


async def test_a_wrong_declared_digest_is_refused_and_discarded() -> None:
    service = memory_service()
    heard = Heard()
    service.events.subscribe(heard)
    upload = await service.create(length=5, expected_sha256=sha(b"other"))
    with pytest.raises(DigestMismatch):
        await service.append(upload.id, 0, body(b"hello"))
    with pytest.raises(Gone):
        await service.status(upload.id)
    rejected = heard.events[-1]
    assert isinstance(rejected, events.Rejected)
    assert rejected.reason == "digest"
    assert "verification" in rejected.detail
    assert [i async for i, _ in service.storage.stored_ids()] == []


async def test_refused_requests_change_nothing() -> None:
    service = memory_service()
    upload = await service.create(length=10)
    await service.append(upload.id, 0, body(b"abc"))
    with pytest.raises(OffsetMismatch):
        await service.append(upload.id, 2, body(b"x"))
    bad = ("sha1", hashlib.sha1(b"not this").digest())
    with pytest.raises(ChecksumMismatch):
        await service.append(upload.id, 3, body(b"defg"), checksum=bad)
    assert (await service.status(upload.id)).offset == 3
    with pytest.raises(NotFound):  # another owner's upload does not exist for them
        await service.status(upload.id, owner="mallory")


async def test_status_changes_nothing_and_reconcile_settles() -> None:
    """Bytes that landed while the process died before the record said so: status() shows
    them without acting; reconcile() completes the upload."""
    service = memory_service()
    heard = Heard()
    upload = await service.create(length=4)
    writer = await service.storage.open_writer(upload.id, 0, atomic=False)
    await writer.write([b"data"])
    await writer.commit()  # the record was never told
    service.events.subscribe(heard)
    seen = await service.status(upload.id)
    assert (seen.offset, seen.state) == (4, UploadState.ACTIVE)
    assert (await service.store.get(upload.id)).state is UploadState.ACTIVE  # type: ignore[union-attr]
    assert heard.events == []
    settled = await service.reconcile(upload.id)
    assert settled.complete
    assert settled.sha256 == sha(b"data")
    assert heard.kinds() == ["Finished"]


async def test_concatenation_assembles_when_the_last_partial_arrives() -> None:
    service = memory_service()
    pieces = [b"one ", b"two ", b"three"]
    parts = [await service.create(length=len(p), partial=True) for p in pieces]
    await service.append(parts[0].id, 0, body(pieces[0]))
    final = await service.create_final([p.id for p in parts], expected_sha256=sha(b"".join(pieces)))
    assert final.state is UploadState.ACTIVE  # concatenation-unfinished
    for part, data in zip(parts[1:], pieces[1:], strict=True):
        await service.append(part.id, 0, body(data))
    for _ in range(100):  # assembled in the background once the last partial completed
        if (await service.status(final.id)).complete:
            break
        await asyncio.sleep(0.01)
    done = await service.reconcile(final.id)
    assert done.complete
    assert done.length == 13
    assert done.sha256 == sha(b"one two three")
    _, stream = await service.open_download(final.id)
    assert b"".join([block async for block in stream]) == b"one two three"
    for part in parts:  # consumed by the final upload
        with pytest.raises(Gone):
            await service.status(part.id)


async def test_instant_upload_for_the_owner_and_a_proof_for_others() -> None:
    service = memory_service()
    data = b"the same content" * 100
    first = await service.create(length=len(data), owner="alice")
    await service.append(first.id, 0, body(data), owner="alice")
    again = await service.create(length=len(data), owner="alice", expected_sha256=sha(data))
    assert again.complete  # no byte sent
    other = await service.create(length=len(data), owner="bob", expected_sha256=sha(data))
    assert not other.complete
    assert other.challenge is not None
    challenge = Challenge.from_json(other.challenge)
    wrong = answer(challenge.nonce, [b"guess"])
    with pytest.raises(ProofRejected):
        await service.prove(other.id, wrong, owner="bob")
    with pytest.raises(ProofRejected):  # one answer per challenge
        await service.prove(other.id, wrong, owner="bob")
    third = await service.create(length=len(data), owner="carol", expected_sha256=sha(data))
    challenge = Challenge.from_json(third.challenge or "")
    blocks = [data[first_byte : last + 1] for first_byte, last in challenge.ranges]
    proved = await service.prove(third.id, answer(challenge.nonce, blocks), owner="carol")
    assert proved.complete
    assert proved.sha256 == sha(data)


async def test_a_proof_after_the_source_bytes_vanished_is_refused_not_a_crash() -> None:
    """The storage contract: a backend's missing bytes reach the client as a refusal."""
    service = memory_service()
    data = b"x" * 4096
    source = await service.create(length=len(data), owner="alice")
    await service.append(source.id, 0, body(data), owner="alice")
    claim = await service.create(length=len(data), owner="bob", expected_sha256=sha(data))
    challenge = Challenge.from_json(claim.challenge or "")
    await service.storage.delete(source.id)  # its record still says complete
    blocks = [data[a : b + 1] for a, b in challenge.ranges]
    with pytest.raises(ProofRejected, match="no longer stored"):
        await service.prove(claim.id, answer(challenge.nonce, blocks), owner="bob")


async def test_termination_and_expiry_are_told() -> None:
    service = memory_service(Limits(expiration=60))
    heard = Heard()
    service.events.subscribe(heard)
    ended = await service.create(length=10)
    await service.terminate(ended.id)
    stale = await service.create(length=10)
    report = await service.collect_garbage(now=time.time() + 3600)
    assert report.ids == [stale.id]
    assert heard.kinds(ended.id) == ["Created", "Terminated"]
    assert heard.kinds(stale.id) == ["Created", "Expired"]
    for gone in (ended, stale):
        with pytest.raises(Gone):
            await service.status(gone.id)


async def test_a_repeated_keyed_creation_is_the_same_upload() -> None:
    service = memory_service()
    first = await service.create(length=3, idempotency_key="k1")
    await service.append(first.id, 0, body(b"ab"))
    again = await service.create(length=3, idempotency_key="k1")
    assert again.id == first.id
    assert again.offset == 2


async def test_unsubscribed_listeners_hear_nothing_more() -> None:
    service = memory_service()
    heard = Heard()
    stop = service.events.subscribe(heard)
    await service.create(length=1)
    stop()
    await service.create(length=1)
    assert heard.kinds() == ["Created"]
