"""Copies inside the store: concatenations of finished uploads and shared content, by
UploadPartCopy where the parts allow it; small pieces (S3 takes parts under 5 MiB only last),
and parts of stores that need equal sizes spanning two sources, pass through haul."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from haul.storage.s3_config import missing_as_contract
from haul.storage.s3_parts import MAX_PART, MIN_PART, MiB, equal_size

if TYPE_CHECKING:
    from haul.storage.s3 import S3Storage

# Parts copied inside the store at once: one UploadPartCopy keeps a gateway's thread busy and
# waits on its disks, so a concatenation of four partials copied one after another took ~4x
# the time of one (1.4 s for 256 MiB on one Ceph RGW).
COPIES_AT_ONCE = 4

T = TypeVar("T")


async def few_at_a_time(jobs: list[Callable[[], Awaitable[T]]]) -> list[T]:
    """The jobs' results in order, COPIES_AT_ONCE of them running at once. The first failure
    cancels the rest and is raised as it is (callers tell a missing source by its type)."""
    at_once = asyncio.Semaphore(COPIES_AT_ONCE)

    async def one(job: Callable[[], Awaitable[T]]) -> T:
        async with at_once:
            return await job()

    tasks = [asyncio.ensure_future(one(job)) for job in jobs]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def copy_together(storage: S3Storage, sources: list[tuple[str, int]], target: str) -> None:
    """``target`` becomes the sources' bytes in order, copied inside the store. Pieces
    under 5 MiB (allowed only last) pass through haul instead."""
    s3 = await storage._s3()
    ranges = [
        (key, first, min(size, first + MAX_PART), size)
        for key, size in sources
        for first in range(0, size, MAX_PART)
    ]
    if not ranges:  # nothing but empty uploads
        await storage._put(target, b"")
        return
    small_inside = any(stop - first < MIN_PART for _, first, stop, _ in ranges[:-1])
    if len(ranges) == 1 and ranges[0][1:3] == (0, ranges[0][3]):
        source = {"Bucket": storage.bucket, "Key": ranges[0][0]}
        with missing_as_contract(ranges[0][0]):
            await s3.copy_object(Bucket=storage.bucket, Key=target, CopySource=source)
        return
    mpu = (await s3.create_multipart_upload(Bucket=storage.bucket, Key=target))["UploadId"]
    try:
        parts = []
        if storage.equal_parts:
            total = sum(size for _, size in sources)
            with missing_as_contract("a source of the copy"):
                parts = await copy_equal(
                    storage, sources, target, mpu, equal_size(storage.part_size, total)
                )
        elif small_inside:
            parts = await _copy_through(storage, sources, target, mpu)
        else:

            def copy(number: int, key: str, first: int, stop: int) -> Callable[[], Awaitable[Any]]:
                async def job() -> dict[str, Any]:
                    with missing_as_contract(key):
                        copied = await s3.upload_part_copy(
                            Bucket=storage.bucket, Key=target, UploadId=mpu, PartNumber=number,
                            CopySource={"Bucket": storage.bucket, "Key": key},
                            CopySourceRange=f"bytes={first}-{stop - 1}",
                        )  # fmt: skip
                    return {"PartNumber": number, "ETag": copied["CopyPartResult"]["ETag"]}

                return job

            parts = await few_at_a_time(
                [copy(n, key, first, stop) for n, (key, first, stop, _) in enumerate(ranges, 1)]
            )
        await s3.complete_multipart_upload(
            Bucket=storage.bucket, Key=target, UploadId=mpu, MultipartUpload={"Parts": parts}
        )
    except BaseException:
        with contextlib.suppress(Exception):
            await s3.abort_multipart_upload(Bucket=storage.bucket, Key=target, UploadId=mpu)
        raise


async def _copy_through(
    storage: S3Storage, sources: list[tuple[str, int]], target: str, mpu: str
) -> list[dict[str, Any]]:
    """Re-part small pieces: stream them through memory into parts of ``part_size``."""
    s3 = await storage._s3()
    parts: list[dict[str, Any]] = []
    pending = bytearray()

    async def send(size: int) -> None:
        number = len(parts) + 1
        body = pending[:size]
        del pending[:size]
        etag = await storage.upload_part(target, mpu, number, body)
        parts.append({"PartNumber": number, "ETag": etag})

    for key, size in sources:
        if not size:
            continue
        with missing_as_contract(key):
            answer = await s3.get_object(Bucket=storage.bucket, Key=key)
        async with answer["Body"] as body:
            while block := await body.read(MiB):
                pending += block
                if len(pending) >= (full := storage.part_size_for(len(parts) + 1, None)):
                    await send(full)
    if pending or not parts:
        await send(len(pending))
    return parts


@dataclass(frozen=True)
class Segment:
    key: str
    first: int
    stop: int


def windows(sources: list[tuple[str, int]], size: int) -> list[list[Segment]]:
    """The concatenation of ``sources`` (key, length) cut into parts of ``size`` bytes (the
    last one shorter), each part as the source ranges it covers, in order."""
    parts: list[list[Segment]] = []
    current: list[Segment] = []
    room = size
    for key, length in sources:
        first = 0
        while first < length:
            take = min(room, length - first)
            current.append(Segment(key, first, first + take))
            first, room = first + take, room - take
            if not room:
                parts.append(current)
                current, room = [], size
    if current:
        parts.append(current)
    return parts


async def copy_equal(
    storage: S3Storage, sources: list[tuple[str, int]], target: str, mpu: str, size: int
) -> list[dict[str, Any]]:
    """Fill multipart upload ``mpu`` of ``target`` with the sources' bytes in equal parts: a
    part inside one source is copied by the store (UploadPartCopy); only a part spanning two
    sources passes through haul, read by ranged GETs."""
    s3 = await storage._s3()
    through = asyncio.Semaphore(1)  # a part passing through haul is held in memory whole

    def part(number: int, segments: list[Segment]) -> Callable[[], Awaitable[dict[str, Any]]]:
        async def job() -> dict[str, Any]:
            if len(segments) == 1:
                piece = segments[0]
                copied = await s3.upload_part_copy(
                    Bucket=storage.bucket, Key=target, UploadId=mpu, PartNumber=number,
                    CopySource={"Bucket": storage.bucket, "Key": piece.key},
                    CopySourceRange=f"bytes={piece.first}-{piece.stop - 1}",
                )  # fmt: skip
                etag = str(copied["CopyPartResult"]["ETag"])
            else:
                async with through:
                    etag = await _send_through(storage, segments, target, mpu, number)
            return {"PartNumber": number, "ETag": etag}

        return job

    return await few_at_a_time(
        [part(number, segments) for number, segments in enumerate(windows(sources, size), 1)]
    )


async def _send_through(
    storage: S3Storage, segments: list[Segment], target: str, mpu: str, number: int
) -> str:
    s3 = await storage._s3()
    body = bytearray()  # at most one part: the sizes of parts that span two sources
    for piece in segments:
        answer = await s3.get_object(
            Bucket=storage.bucket, Key=piece.key, Range=f"bytes={piece.first}-{piece.stop - 1}"
        )
        async with answer["Body"] as stream:
            while block := await stream.read(MiB):
                body += block
    return await storage.upload_part(target, mpu, number, body)
