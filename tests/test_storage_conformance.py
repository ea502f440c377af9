"""One conformance suite for every Storage: memory (MemoryStorage), the data dir
(LocalStorage) and S3 (S3Storage against a real Ceph RADOS Gateway, which enforces S3's part
rules)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from haul.core.interfaces import Storage, StoredBytesMissing
from haul.errors import OffsetMismatch
from haul.storage.local import LocalStorage
from haul.storage.memory import MemoryStorage
from haul.storage.s3 import S3Storage
from haul.storage.s3_state import Part, S3State, Tail
from tests.services import S3_ACCESS, S3_SECRET

MiB = 1 << 20
A, B, C, D = ("a" * 32, "b" * 32, "c" * 32, "d" * 32)


@pytest.fixture(params=[pytest.param("memory", marks=pytest.mark.fast), "local", "s3"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    if request.param == "memory":
        made: Storage = MemoryStorage()
    elif request.param == "local":
        made = LocalStorage(tmp_path / "uploads", fsync=False)
    else:
        made = S3Storage(
            bucket=request.getfixturevalue("s3_bucket"),
            endpoint=request.getfixturevalue("rgw"),
            region="us-east-1",
            access_key=S3_ACCESS,
            secret_key=S3_SECRET,
            part_size=5 * MiB,  # S3's minimum: the tests cross part boundaries quickly
            memory=12 * MiB,  # two parts in flight at once across the node, no more
        )
    yield made
    await made.close()


async def read_all(storage: Storage, upload_id: str, start: int, end: int) -> bytes:
    return b"".join([block async for block in storage.read(upload_id, start, end)])


async def append(storage: Storage, upload_id: str, offset: int, data: bytes, *,
                 atomic: bool = False, piece: int = MiB) -> int:  # fmt: skip
    writer = await storage.open_writer(upload_id, offset, atomic=atomic)
    for at in range(0, len(data), piece):
        await writer.write([data[at : at + piece]])
    return await writer.commit()


async def test_appends_across_parts_read_back_exactly(storage: Storage) -> None:
    data = os.urandom(12 * MiB + 321)
    await storage.create(A)
    assert await storage.offset(A) == 0
    # Uneven requests: some end inside a part, one spans two parts, one is tiny.
    cuts = [0, 3 * MiB + 7, 3 * MiB + 8, 9 * MiB, len(data)]
    for first, stop in itertools.pairwise(cuts):
        assert await append(storage, A, first, data[first:stop]) == stop
        assert await storage.offset(A) == stop
    await storage.finish(A)
    await storage.finish(A)  # idempotent
    assert await storage.offset(A) == len(data)
    assert await read_all(storage, A, 0, len(data)) == data
    assert await read_all(storage, A, 5 * MiB - 3, 5 * MiB + 3) == data[5 * MiB - 3 : 5 * MiB + 3]


async def test_creating_again_keeps_what_is_stored(storage: Storage) -> None:
    await storage.create(A)
    await append(storage, A, 0, b"hello")
    await storage.create(A)  # a repeated creation (its first answer was lost)
    assert await storage.offset(A) == 5
    assert await append(storage, A, 5, b" world") == 11
    await storage.finish(A)
    assert await read_all(storage, A, 0, 11) == b"hello world"


async def test_the_offset_is_checked(storage: Storage) -> None:
    await storage.create(A)
    await append(storage, A, 0, b"hello")
    with pytest.raises(OffsetMismatch):
        await storage.open_writer(A, 0, atomic=False)
    with pytest.raises(OffsetMismatch):
        await storage.open_writer(A, 6, atomic=False)


async def test_atomic_writes_count_only_once_committed(storage: Storage) -> None:
    data = os.urandom(7 * MiB)
    await storage.create(A)
    await append(storage, A, 0, data[:MiB])
    writer = await storage.open_writer(A, MiB, atomic=True)
    for at in range(MiB, 7 * MiB, MiB):  # crosses a part boundary before it is discarded
        await writer.write([data[at : at + MiB]])
    await writer.discard()
    assert await storage.offset(A) == MiB
    assert await append(storage, A, MiB, data[MiB:], atomic=True) == 7 * MiB
    await storage.finish(A)
    assert await read_all(storage, A, 0, 7 * MiB) == data


async def test_an_interrupted_plain_write_keeps_what_arrived(storage: Storage) -> None:
    data = os.urandom(8 * MiB)
    arrived = 5 * MiB + 4321  # past a part boundary, with a tail that fills no part
    await storage.create(A)
    writer = await storage.open_writer(A, 0, atomic=False)
    for at in range(0, arrived, MiB):
        await writer.write([data[at : min(at + MiB, arrived)]])
    # The request died here, 3 MiB short of its end: the service commits what arrived.
    assert await writer.commit() == arrived
    assert await storage.offset(A) == arrived
    with pytest.raises(OffsetMismatch):  # nothing beyond what arrived counts
        await storage.open_writer(A, 8 * MiB, atomic=False)
    # The client resumes from the offset it is told, and the upload is whole.
    assert await append(storage, A, arrived, data[arrived:]) == len(data)
    await storage.finish(A)
    assert await read_all(storage, A, 0, len(data)) == data


async def test_concatenation_and_sharing(storage: Storage) -> None:
    first, second, third = os.urandom(6 * MiB), os.urandom(5 * MiB + 1), b"tiny tail"
    for upload_id, data in ((A, first), (B, second), (C, third)):
        await storage.create(upload_id)
        await append(storage, upload_id, 0, data)
        await storage.finish(upload_id)
    await storage.create(D)
    await storage.concatenate(D, [A, B, C])
    whole = first + second + third
    assert await storage.offset(D) == len(whole)
    assert await read_all(storage, D, 0, len(whole)) == whole
    # Small pieces in the middle (S3 allows them only last) are joined too.
    small = "e" * 32
    await storage.create(small)
    await storage.concatenate(small, [C, C, A])
    assert await read_all(storage, small, 0, 2 * len(third) + len(first)) == third * 2 + first
    twin = "f" * 32
    await storage.create(twin)
    assert await storage.share(D, twin)
    await storage.delete(D)  # the twin keeps its bytes
    assert await read_all(storage, twin, 0, len(whole)) == whole
    assert not await storage.share(D, "0" * 32)  # the source is gone


async def test_shared_uploads_can_be_concatenated(storage: Storage) -> None:
    """An upload stored once with another (a share) is still a whole part of a final one."""
    first, second = os.urandom(5 * MiB + 3), b"end"
    for upload_id, data in ((A, first), (B, second)):
        await storage.create(upload_id)
        await append(storage, upload_id, 0, data)
        await storage.finish(upload_id)
    await storage.create(C)
    await storage.concatenate(C, [A, B])  # on disk: a directory of segments
    twin = "e" * 32
    await storage.create(twin)
    assert await storage.share(C, twin)  # so is its share
    await storage.create(D)
    await storage.concatenate(D, [twin, B])
    whole = first + second + second
    assert await read_all(storage, D, 0, len(whole)) == whole


async def test_concatenating_again_replaces_the_first_assembly(storage: Storage) -> None:
    """A node that assembled a final upload and died before its record said so leaves the
    assembly behind: the next node's assembly of the same final must take its place."""
    for upload_id, data in ((A, os.urandom(5 * MiB + 1)), (B, b"tail")):
        await storage.create(upload_id)
        await append(storage, upload_id, 0, data)
        await storage.finish(upload_id)
    await storage.create(C)
    await storage.concatenate(C, [A, B])
    first = await read_all(storage, C, 0, 5 * MiB + 5)
    await storage.concatenate(C, [A, B])
    assert await read_all(storage, C, 0, 5 * MiB + 5) == first
    assert await storage.offset(C) == 5 * MiB + 5


async def test_a_writer_is_done_once_committed(storage: Storage) -> None:
    await storage.create(A)
    writer = await storage.open_writer(A, 0, atomic=False)
    await writer.write([b"kept"])
    assert await writer.commit() == 4
    await writer.discard()  # too late: the bytes are committed
    assert await storage.offset(A) == 4


async def test_uploads_below_a_storage_key(storage: Storage) -> None:
    """Names with folders (``<storage key>/<id>``) work like plain ids, and are listed so."""
    first, second = "videos/alice/" + A, "videos/bob/" + B
    for name, data in ((first, b"alice's"), (second, b" and bob's")):
        await storage.create(name)
        assert await append(storage, name, 0, data) == len(data)
        await storage.finish(name)
    joined = "joined/" + C
    await storage.create(joined)
    await storage.concatenate(joined, [first, second])
    assert await read_all(storage, joined, 0, 17) == b"alice's and bob's"
    assert await storage.share(first, D)
    assert await read_all(storage, D, 0, 7) == b"alice's"
    names = {name async for name, _ in storage.stored_ids()}
    assert {first, second, joined, D} <= names
    assert A not in names  # the plain id is not a name of its own
    for name in (first, second, joined):
        await storage.delete(name)
    assert {name async for name, _ in storage.stored_ids()} & {first, second, joined} == set()
    assert await read_all(storage, D, 0, 7) == b"alice's"  # shared bytes outlive the source


async def test_empty_uploads(storage: Storage) -> None:
    await storage.create(A)
    await storage.finish(A)
    assert await storage.offset(A) == 0
    assert await read_all(storage, A, 0, 0) == b""


async def test_delete_and_stored_ids(storage: Storage) -> None:
    for upload_id in (A, B):
        await storage.create(upload_id)
        await append(storage, upload_id, 0, b"x" * 10)
    await storage.finish(A)
    ids = {upload_id async for upload_id, _ in storage.stored_ids()}
    assert {A, B} <= ids
    await storage.delete(A)
    await storage.delete(B)
    await storage.delete(B)  # deleting what is gone is fine
    assert {upload_id async for upload_id, _ in storage.stored_ids()} & {A, B} == set()


async def test_missing_bytes_raise_the_contracts_error(storage: Storage) -> None:
    """Every backend says "no such bytes" the same way, never with its own error type."""
    with pytest.raises(StoredBytesMissing):
        await read_all(storage, A, 0, 10)
    await storage.create(B)
    await append(storage, B, 0, b"x" * 10)
    await storage.finish(B)
    await storage.create(C)
    with pytest.raises(StoredBytesMissing):
        await storage.concatenate(C, [B, A])
    await storage.delete(B)
    with pytest.raises(StoredBytesMissing):
        await read_all(storage, B, 0, 10)


def test_s3_state_keeps_its_json_shape() -> None:
    """Uploads in flight survive an upgrade: the state reads what earlier releases wrote."""
    written = b'{"mpu": "m1", "parts": [[1, 5242880, "\\"e1\\""]], "tail": ["k.tail", 9]}'
    state = S3State.from_json(written)
    assert state == S3State("m1", (Part(1, 5 * MiB, '"e1"'),), Tail("k.tail", 9))
    assert state.held == 5 * MiB + 9
    assert json.loads(state.to_json()) == json.loads(written)


def test_s3_state_keeps_its_tail_inside() -> None:
    """The tail's bytes follow the JSON line, so the parts and the tail change in one PUT."""
    state = S3State("m1", (Part(1, 5 * MiB, '"e1"'),), tail_data=b"\n tail {bytes}\n")
    body = state.encode()
    assert json.loads(body.partition(b"\n")[0])["inline"] == 15
    assert S3State.decode(body) == state
    assert state.held == 5 * MiB + 15
    with pytest.raises(ValueError, match="tail bytes"):  # truncated: never a shorter tail
        S3State.decode(body[:-1])


async def test_s3_reads_a_separate_tail_of_earlier_releases(
    s3_bucket: str, rgw: str, tmp_path: Path
) -> None:
    """An upload in flight across an upgrade: its state names a tail object of its own."""
    storage = S3Storage(bucket=s3_bucket, endpoint=rgw, region="us-east-1",
                        access_key=S3_ACCESS, secret_key=S3_SECRET, part_size=5 * MiB)  # fmt: skip
    try:
        data = os.urandom(11 * MiB + 5)
        await storage.create(A)
        await append(storage, A, 0, data[: 6 * MiB])  # one part, and 1 MiB of tail
        state = await storage._load_state(A)
        assert state is not None
        assert len(state.tail_data) == MiB
        old_tail = storage._key(A) + ".tail.0123"
        await storage._put(old_tail, state.tail_data)
        old = S3State(state.mpu, state.parts, Tail(old_tail, MiB))
        await storage._put(storage._key(A) + ".state", old.to_json())  # as they wrote it
        assert await storage.offset(A) == 6 * MiB
        assert await append(storage, A, 6 * MiB, data[6 * MiB :]) == len(data)
        keys = [k async for k, _ in storage.stored_ids()]
        assert keys == [A]
        listing = await (await storage._s3()).list_objects_v2(Bucket=s3_bucket)
        assert old_tail not in [o["Key"] for o in listing["Contents"]]  # dropped once replaced
        await storage.finish(A)
        assert await read_all(storage, A, 0, len(data)) == data
    finally:
        await storage.close()


def test_s3_part_sizes_reach_five_tib_within_10000_parts() -> None:
    storage = S3Storage(bucket="unused", part_size=8 * MiB)
    total = sum(storage.part_size_for(n) for n in range(1, 10_001))
    assert total >= 5 * (1 << 40)
    assert storage.part_size_for(1) == 8 * MiB
    assert storage.part_size_for(1001) == 16 * MiB
    assert max(storage.part_size_for(n) for n in range(1, 10_001)) <= 5 * (1 << 30)


async def test_s3_finish_after_a_node_died_between_completing_and_cleaning_up(
    s3_bucket: str, rgw: str, tmp_path: Path
) -> None:
    storage = S3Storage(bucket=s3_bucket, endpoint=rgw, region="us-east-1",
                        access_key=S3_ACCESS, secret_key=S3_SECRET, part_size=5 * MiB)  # fmt: skip
    try:
        data = os.urandom(6 * MiB + 9)  # one part and a tail
        await storage.create(A)
        await append(storage, A, 0, data)
        state = await storage._load_state(A)
        assert state is not None
        await storage.finish(A)
        # The node that finished died before removing its state (tail inside): put it back.
        assert state.tail_data == data[5 * MiB :]
        await storage._save_state(A, state)
        await storage.finish(A)  # another node finishes it again: no error, nothing lost
        assert await storage.offset(A) == len(data)
        assert await read_all(storage, A, 0, len(data)) == data
        assert {k async for k, _ in storage.stored_ids()} == {A}
        assert await storage._load_state(A) is None
    finally:
        await storage.close()


def s3_storage(rgw: str, bucket: str, **options: int) -> S3Storage:
    return S3Storage(bucket=bucket, endpoint=rgw, region="us-east-1", access_key=S3_ACCESS,
                     secret_key=S3_SECRET, part_size=5 * MiB, **options)  # fmt: skip


async def test_s3_a_failed_part_fails_the_request_and_counts_nothing_more(
    s3_bucket: str, rgw: str
) -> None:
    storage = s3_storage(rgw, s3_bucket)
    try:
        await storage.create(A)
        await append(storage, A, 0, b"kept")
        state = await storage._load_state(A)
        assert state is not None
        # The multipart upload vanishes behind the writer's back: every part it sends fails.
        s3 = await storage._s3()
        await s3.abort_multipart_upload(Bucket=s3_bucket, Key=storage._key(A), UploadId=state.mpu)
        writer = await storage.open_writer(A, 4, atomic=False)

        async def send_and_commit() -> int:
            for _ in range(12):  # two parts' worth: the failure shows by the end at the latest
                await writer.write([os.urandom(MiB)])
            return await writer.commit()

        with pytest.raises(ClientError, match="NoSuchUpload"):
            await send_and_commit()
        await writer.discard()
        assert await storage.offset(A) == 4  # what the state says, not what was sent
    finally:
        await storage.close()


async def test_s3_parts_in_flight_stay_within_the_node_budget(s3_bucket: str, rgw: str) -> None:
    storage = s3_storage(rgw, s3_bucket, memory=12 * MiB, parts_in_flight=4)
    most = 0
    stop = asyncio.Event()

    async def watch() -> None:
        nonlocal most
        while not stop.is_set():
            most = max(most, storage.budget.used)
            await asyncio.sleep(0)

    try:
        data = {name: os.urandom(26 * MiB) for name in (A, B, C)}
        for name in data:
            await storage.create(name)
        watcher = asyncio.create_task(watch())
        ends = await asyncio.gather(*(append(storage, n, 0, d) for n, d in data.items()))
        stop.set()
        await watcher
        assert ends == [26 * MiB] * 3
        # Three uploads, four parts in flight each allowed: yet never more than the budget.
        assert 0 < most <= 12 * MiB
        assert storage.budget.used == 0
        for name, payload in data.items():
            await storage.finish(name)
            assert await read_all(storage, name, 0, len(payload)) == payload
    finally:
        await storage.close()
