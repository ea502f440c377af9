"""What a part costs on its way to S3: signed with a digest computed off the event loop, its
body sent without a copy, its buffer reused, its room in the node's budget taken before its
first byte is copied in; and the client made at startup."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time

import pytest
from botocore.exceptions import ClientError

from haul.storage.s3 import WARM_TIMEOUT, S3Storage
from haul.storage.s3_config import PartBody
from haul.storage.s3_signing import signed_with
from haul.storage.s3_writer import PartBuffers
from tests.helpers import free_port
from tests.services import S3_ACCESS, S3_SECRET

MiB = 1 << 20


def storage_on(rgw: str, bucket: str) -> S3Storage:
    return S3Storage(bucket=bucket, endpoint=rgw, region="us-east-1", access_key=S3_ACCESS,
                     secret_key=S3_SECRET)  # fmt: skip


async def test_a_part_is_signed_with_the_digest_given_to_the_signer(
    rgw: str, s3_bucket: str
) -> None:
    """The gateway checks the signed SHA-256 against the body: a part signed with the digest
    computed beforehand is taken, and one signed with a wrong digest is refused, so the
    digest handed over is the one signed (botocore did not hash the body itself)."""
    storage = storage_on(rgw, s3_bucket)
    try:
        await storage.open()
        key = storage._key("a" * 32)
        s3 = await storage._s3()
        mpu = (await s3.create_multipart_upload(Bucket=s3_bucket, Key=key))["UploadId"]
        body = bytearray(os.urandom(5 * MiB))
        etag = await storage.upload_part(key, mpu, 1, body)  # prehashed in a worker thread
        assert etag.strip('"') == hashlib.md5(body).hexdigest()
        wrong = hashlib.sha256(b"other bytes").hexdigest()
        with signed_with(body, wrong), pytest.raises(ClientError) as refused:
            await s3.upload_part(Bucket=s3_bucket, Key=key, UploadId=mpu, PartNumber=2,
                                 Body=body, ContentLength=len(body))  # fmt: skip
        assert refused.value.response["Error"]["Code"] in {
            "XAmzContentSHA256Mismatch", "SignatureDoesNotMatch", "BadDigest"}  # fmt: skip
        await s3.abort_multipart_upload(Bucket=s3_bucket, Key=key, UploadId=mpu)
    finally:
        await storage.close()


class Recording:
    """Keeps what a payload writes, as the transport would receive it."""

    def __init__(self) -> None:
        self.chunks: list[memoryview] = []

    async def write(self, chunk: memoryview) -> None:
        self.chunks.append(chunk)


@pytest.mark.fast
async def test_a_part_body_goes_out_as_views_of_its_buffer() -> None:
    body = bytearray(os.urandom(3 * MiB + 7))
    payload = PartBody(memoryview(body))
    writer = Recording()
    await payload.write_with_length(writer, len(body))  # type: ignore[arg-type]
    assert [len(c) for c in writer.chunks] == [PartBody.FIRST, len(body) - PartBody.FIRST]
    assert all(c.obj is body for c in writer.chunks)  # views, not copies
    assert b"".join(writer.chunks) == body
    assert payload.seek(0) == 0  # botocore rewinds before it tries again: sent whole again
    with pytest.raises(OSError, match="only ever sent from its start"):
        payload.seek(5)


@pytest.mark.fast
async def test_part_buffers_are_reused_within_their_limit_and_dropped_when_idle() -> None:
    buffers = PartBuffers(16 * MiB)
    first = buffers.get(8 * MiB)
    buffers.give(first)
    assert buffers.get(8 * MiB) is first
    kept = [buffers.get(8 * MiB) for _ in range(3)]
    for body in kept:
        buffers.give(body)  # the third is beyond the limit: dropped
    again = [buffers.get(8 * MiB) for _ in range(3)]
    assert sum(any(a is k for k in kept) for a in again) == 2
    assert len(buffers.get(5 * MiB)) == 5 * MiB  # another size: a buffer of its own
    buffers.IDLE = 0.05
    buffers.give(again[0])
    await asyncio.sleep(0.2)
    assert buffers.get(8 * MiB) is not again[0]  # idle long enough: given back


async def test_open_makes_the_client_and_tolerates_a_store_that_does_not_answer(
    rgw: str, s3_bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    storage = storage_on(rgw, s3_bucket)
    try:
        await storage.open()
        assert storage._client is not None
    finally:
        await storage.close()
    down = storage_on(f"http://127.0.0.1:{free_port()}", s3_bucket)  # nothing listens there
    started = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING, logger="haul"):
            await down.open()  # a server still starts; its requests ask the store again
        assert time.monotonic() - started < WARM_TIMEOUT + 5
        assert "did not answer at startup" in caplog.text
    finally:
        await down.close()


async def test_a_part_being_filled_holds_its_room_in_the_node_budget(
    rgw: str, s3_bucket: str
) -> None:
    """Bytes wait for their part in the part's own buffer, whose room is taken first: with
    room for two parts, two uploads stopped in the middle of a part hold it, and a third
    waits before it takes a byte, until one of them ends."""
    storage = S3Storage(bucket=s3_bucket, endpoint=rgw, region="us-east-1",
                        access_key=S3_ACCESS, secret_key=S3_SECRET, part_size=5 * MiB,
                        memory=10 * MiB)  # fmt: skip
    try:
        ids = ["b" * 32, "c" * 32, "d" * 32]
        for upload_id in ids:
            await storage.create(upload_id)
        first, second, third = [await storage.open_writer(i, 0, atomic=False) for i in ids]
        await first.write([b"x" * (3 * MiB)])
        await second.write([b"y" * (2 * MiB)])
        assert storage.budget.used == 10 * MiB  # two parts' room, though 5 MiB arrived
        waiting = asyncio.create_task(third.write([b"z" * MiB]))
        await asyncio.sleep(0.2)
        assert not waiting.done()  # no room: it takes nothing more from its request
        assert await first.commit() == 3 * MiB  # the first request ends: its room is free
        await asyncio.wait_for(waiting, 5)
        assert await second.commit() == 2 * MiB
        assert await third.commit() == MiB
        assert storage.budget.used == 0
        assert await storage.offset(ids[0]) == 3 * MiB  # its tail kept, the buffer reused
    finally:
        await storage.close()


async def test_a_write_cut_short_while_it_waits_for_room_loses_and_doubles_nothing(
    rgw: str, s3_bucket: str
) -> None:
    """An upload with a stored tail whose next write is cancelled while it waits for room:
    committed anyway, it keeps its tail exactly once (none of it lost, none of it doubled)."""
    storage = S3Storage(bucket=s3_bucket, endpoint=rgw, region="us-east-1",
                        access_key=S3_ACCESS, secret_key=S3_SECRET, part_size=5 * MiB,
                        memory=5 * MiB)  # fmt: skip
    try:
        kept, other = "e" * 32, "f" * 32
        for upload_id in (kept, other):
            await storage.create(upload_id)
        tail = os.urandom(MiB)
        first = await storage.open_writer(kept, 0, atomic=False)
        await first.write([tail])
        assert await first.commit() == MiB  # a tail, stored in the state object
        holder = await storage.open_writer(other, 0, atomic=False)
        await holder.write([b"h" * MiB])  # holds the node's only part's room
        cut_short = await storage.open_writer(kept, MiB, atomic=False)
        waiting = asyncio.create_task(cut_short.write([os.urandom(2 * MiB)]))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert await cut_short.commit() == MiB
        assert await holder.commit() == MiB
        await storage.finish(kept)
        stored = b"".join([chunk async for chunk in storage.read(kept, 0, MiB)])
        assert stored == tail
        assert storage.budget.used == 0
    finally:
        await storage.close()
