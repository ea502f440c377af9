"""The service's rules on a real S3 store (Ceph RGW) with in-memory records: where a backend's
own errors once leaked out of the core as a 500."""

from __future__ import annotations

import base64
import hashlib
import logging
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
from haul.storage.s3_state import S3State
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


class CountingS3(S3Storage):
    """The real store, counting the state objects read and written."""

    def __init__(self, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.reads = self.writes = 0

    async def _load_state(self, upload_id: str) -> S3State | None:
        self.reads += 1
        return await super()._load_state(upload_id)

    async def _put(self, key: str, body: bytes) -> None:
        self.writes += 1
        await super()._put(key, body)


async def test_a_request_costs_one_state_read_and_one_write(rgw: str, s3_bucket: str) -> None:
    storage = CountingS3(bucket=s3_bucket, endpoint=rgw, region="us-east-1",
                         access_key=S3_ACCESS, secret_key=S3_SECRET, part_size=5 * MiB)  # fmt: skip
    service = UploadService(storage, MemoryStore(), MemoryLocker(), Limits())
    try:
        upload = await service.create(length=None)
        data = os.urandom(3 * MiB + 7)
        offset = 0
        for piece in (data[:MiB], data[MiB : 3 * MiB], data[3 * MiB :]):
            storage.reads = storage.writes = 0
            done = await service.append(upload.id, offset, body(piece))
            offset = done.offset
            # The offset check and the writer share one read; the tail rides in the state.
            assert (storage.reads, storage.writes) == (1, 1)
        assert offset == len(data)
        more = os.urandom(8 * MiB)
        storage.reads = 0
        done = await service.append(upload.id, offset, body(more), new_length=offset + len(more))
        assert done.complete
        assert storage.reads <= 2  # the request's own, and the finish's
        _, stream = await service.open_download(upload.id)
        assert b"".join([block async for block in stream]) == data + more
    finally:
        await service.close()


async def test_placed_partials_hash_in_order_without_a_failure(
    rgw: str, s3_bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Partials written into their final's place have no object to read back: the digest
    of the parallel upload falls back to reading the final, quietly."""
    storage = S3Storage(bucket=s3_bucket, endpoint=rgw, region="us-east-1",
                        access_key=S3_ACCESS, secret_key=S3_SECRET, part_size=5 * MiB)  # fmt: skip
    service = UploadService(storage, MemoryStore(), MemoryLocker(), Limits())
    try:
        pieces = [os.urandom(5 * MiB), os.urandom(2 * MiB + 3)]
        parts = []
        for index, piece in enumerate(pieces):
            tag = f"haul-part {b64(f'g1 {index}')}"
            parts.append(await service.create(length=len(piece), partial=True, metadata_raw=tag))
        final = await service.create_final([part.id for part in parts])
        assert not final.complete
        for part, piece in zip(parts, pieces, strict=True):
            await service.append(part.id, 0, body(piece))
        assert await storage.multipart_id(parts[0].id) is not None  # its own, left empty
        done = await service.reconcile(final.id)  # assembled now, if not in the background yet
        assert done.complete
        assert done.sha256 == hashlib.sha256(b"".join(pieces)).hexdigest()
        _, stream = await service.open_download(final.id)
        assert b"".join([block async for block in stream]) == b"".join(pieces)
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    finally:
        await service.close()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
