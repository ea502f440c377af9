"""Part sizes of a multipart upload, and concatenation for stores that need equal parts.

Growing (the default): part n holds ``base * 2 ** ((n - 1) // 1000)`` bytes, so 10,000 parts
reach S3's 5 TiB object limit whatever the length. Equal (Cloudflare R2 refuses a multipart
upload whose parts but the last differ in size): one size for every part, chosen when the
upload is created and kept in its state, large enough that 10,000 parts hold its length when
that is known, else ``base`` (a deferred-length upload then holds at most 10,000 x base).
Parts are always cut at exactly these sizes, so part n of an upload covers the same bytes
whichever request sends it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from haul.storage.s3 import S3Storage

# S3's limits, the same on every implementation: the one place that says them.
MiB = 1 << 20
MIN_PART = 5 * MiB  # the smallest part but the last
MAX_PART = 5 * 1024 * MiB  # the largest part (and single copy)
MAX_PARTS = 10_000


def growing_size(base: int, number: int) -> int:
    return int(base * 2 ** ((number - 1) // 1000))


def equal_size(base: int, length: int | None) -> int:
    """The one part size of an upload of ``length`` bytes (None: not known yet)."""
    if not length:
        return base
    needed = -(-length // MAX_PARTS)
    return min(MAX_PART, max(base, -(-needed // MiB) * MiB))  # whole MiB, for round numbers


PartSize = Callable[[int], int]  # part number -> its size


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
    done: list[dict[str, Any]] = []
    for number, segments in enumerate(windows(sources, size), start=1):
        if len(segments) == 1:
            piece = segments[0]
            copied = await s3.upload_part_copy(
                Bucket=storage.bucket, Key=target, UploadId=mpu, PartNumber=number,
                CopySource={"Bucket": storage.bucket, "Key": piece.key},
                CopySourceRange=f"bytes={piece.first}-{piece.stop - 1}",
            )  # fmt: skip
            etag = str(copied["CopyPartResult"]["ETag"])
        else:
            etag = await _send_through(storage, segments, target, mpu, number)
        done.append({"PartNumber": number, "ETag": etag})
    return done


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
