"""The service's rules on a real S3 store (Ceph RGW) with in-memory records: where a backend's
own errors once leaked out of the core as a 500."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from haul.core.lifecycle import Limits
from haul.core.service import UploadService
from haul.errors import ProofRejected
from haul.locks.memory import MemoryLocker
from haul.records.memory import MemoryStore
from haul.storage.s3 import S3Storage
from haul.wire.possession import Challenge, answer
from tests.inprocess import body
from tests.services import S3_ACCESS, S3_SECRET

MiB = 1 << 20


@pytest.fixture
async def service(rgw: str, s3_bucket: str, tmp_path: Path) -> AsyncIterator[UploadService]:
    storage = S3Storage(bucket=s3_bucket, endpoint=rgw, region="us-east-1",
                        access_key=S3_ACCESS, secret_key=S3_SECRET)  # fmt: skip
    made = UploadService(storage, MemoryStore(), MemoryLocker(), Limits())
    yield made
    await made.close()


async def test_a_proof_after_the_object_vanished_is_refused(service: UploadService) -> None:
    data = os.urandom(6 * MiB)
    digest = hashlib.sha256(data).hexdigest()
    source = await service.create(length=len(data), owner="alice")
    await service.append(source.id, 0, body(data), owner="alice")
    claim = await service.create(length=len(data), owner="bob", expected_sha256=digest)
    assert claim.challenge is not None
    challenge = Challenge.from_json(claim.challenge)
    await service.storage.delete(source.id)  # gone from the store; the record still complete
    blocks = [data[first : last + 1] for first, last in challenge.ranges]
    with pytest.raises(ProofRejected, match="no longer stored"):
        await service.prove(claim.id, answer(challenge.nonce, blocks), owner="bob")
    assert not (await service.status(claim.id, owner="bob")).complete


async def test_an_empty_partial_joins_a_final_upload(service: UploadService) -> None:
    """An upload created empty is complete at once and never finished in the store."""
    empty = await service.create(length=0, partial=True)
    full = await service.create(length=5, partial=True)
    await service.append(full.id, 0, body(b"bytes"))
    final = await service.create_final([empty.id, full.id])
    assert final.complete
    assert final.length == 5
    _, stream = await service.open_download(final.id)
    assert b"".join([block async for block in stream]) == b"bytes"
