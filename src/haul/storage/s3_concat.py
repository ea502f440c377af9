"""Parallel uploads without a second copy: partials *placed* into their final upload's
multipart upload.

A final upload created while its partials are still empty, with every partial's length known,
fixes where each partial's bytes go: partial ``i`` covers ``[layout[i], layout[i+1])`` of the
final object. With a part size ``unit`` that divides every inner boundary, partial ``i``'s
parts are parts ``layout[i] / unit + 1`` on of the final's multipart upload, so its writer sends
them there directly and the concatenation is one CompleteMultipartUpload: no byte is copied. A
partial that already held bytes when the final came (not placed) is copied into its range of
part numbers by UploadPartCopy, as before.

A placed partial keeps its own state (and its own, empty, multipart upload): it is HEADable and
resumable alone, and deleting it never touches the final's multipart upload (deleting the final
aborts it). It has no object of its own to read: whatever reads it back (an ordered digest)
falls back to the final's bytes.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from haul.core.interfaces import StoredBytesMissing
from haul.storage.s3_copy import few_at_a_time
from haul.storage.s3_parts import MAX_PART, MAX_PARTS, MIN_PART
from haul.storage.s3_state import Placement, S3State

if TYPE_CHECKING:
    from haul.storage.s3 import S3Storage


@functools.lru_cache(maxsize=256)
def unit_for(layout: tuple[int, ...], part_size: int) -> int | None:
    """The part size of a placed layout: a common divisor of every inner boundary between 5 MiB
    and 5 GiB with at most 10,000 parts in all, the smallest at least ``part_size`` (else the
    largest below it); None when there is none."""
    total = layout[-1]
    inner = [at for at in layout[1:-1] if 0 < at < total]
    least = max(MIN_PART, -(-total // MAX_PARTS))
    if not inner:  # one piece: any part size fits
        return max(least, min(part_size, MAX_PART)) if least <= MAX_PART else None
    common = functools.reduce(math.gcd, inner)
    divisors: set[int] = set()
    for d in range(1, math.isqrt(common) + 1):
        if common % d == 0:
            divisors.update((d, common // d))
    fitting = sorted(d for d in divisors if least <= d <= MAX_PART)
    if not fitting:
        return None
    above = [d for d in fitting if d >= part_size]
    return above[0] if above else fitting[-1]


async def place(
    storage: S3Storage, part_name: str, final_name: str, layout: Sequence[int], index: int
) -> bool:
    unit = unit_for(tuple(layout), storage.part_size)
    if unit is None:
        return False
    # Two round trips a partial: the final's multipart id is read once for all its partials,
    # and the partial's state is the one its offset was just read from (under its lock).
    final_mpu = await storage.multipart_id(final_name)
    part = await storage._state_just_read(part_name)
    if final_mpu is None or part is None or part.held:
        return False  # too late: bytes went to the partial's own upload
    target = Placement(storage._key(final_name), final_mpu, layout[index] // unit + 1, unit)
    earlier = part.placed
    # Another final upload of the same partials came first: it keeps them while it lives.
    if earlier and earlier != target and await storage._object_size(earlier.key + ".state"):
        return False
    if part.placed != target:
        await storage._save_state(part_name, replace(part, placed=target))
    return True


async def concatenate_placed(
    storage: S3Storage, final_name: str, part_names: Sequence[str]
) -> bool:
    """Complete the final's multipart upload from its placed partials (copying the bytes of
    those not placed into their ranges); False when none of them is placed here."""
    final = await storage._load_state(final_name)
    key = storage._key(final_name)
    # At once: the client's connection pool (max_pool_connections) bounds how many.
    states = await asyncio.gather(*(storage._load_state(name) for name in part_names))
    placed = [s for s in states if s is not None and s.placed and s.placed.key == key]
    if final is None:
        # Completed by an earlier attempt that died before the partials were retired.
        done = placed and await storage._object_size(key) is not None
        return bool(done)
    if not placed or any(s.placed and s.placed.mpu != final.mpu for s in placed):
        return False
    unit = placed[0].placed.unit if placed[0].placed else 0
    pairs = list(zip(part_names, states, strict=True))
    sizes = [await _size(storage, name, state, key) for name, state in pairs]
    layout = [0]
    for size in sizes:
        layout.append(layout[-1] + size)
    if not unit or any(at % unit for at in layout[1:-1]):
        # The lengths are not what they were placed for. (The unit placed with is checked, not
        # one chosen again: --s3-part-size may have changed since, or differ between nodes.)
        return False
    s3 = await storage._s3()
    parts: list[dict[str, Any]] = []
    copies: list[Callable[[], Awaitable[dict[str, Any]]]] = []

    def copy(number: int, name: str, start: int, stop: int) -> Callable[[], Awaitable[Any]]:
        async def job() -> dict[str, Any]:
            copied = await s3.upload_part_copy(
                Bucket=storage.bucket, Key=key, UploadId=final.mpu, PartNumber=number,
                CopySource={"Bucket": storage.bucket, "Key": storage._key(name)},
                CopySourceRange=f"bytes={start}-{stop - 1}",
            )  # fmt: skip
            return {"PartNumber": number, "ETag": copied["CopyPartResult"]["ETag"]}

        return job

    for index, (name, state) in enumerate(pairs):
        first = layout[index] // unit + 1
        if state is not None and state.placed and state.placed.key == key:
            numbers = [p.number for p in state.parts]
            expected = list(range(first, first + len(numbers)))
            if numbers != expected or state.held != sizes[index] or state.tail_data:
                raise StoredBytesMissing(f"partial upload {name} did not send all its parts")
            parts += [{"PartNumber": p.number, "ETag": p.etag} for p in state.parts]
            continue
        for number, start in enumerate(range(0, sizes[index], unit), start=first):
            copies.append(copy(number, name, start, min(sizes[index], start + unit)))
    parts = sorted([*parts, *await few_at_a_time(copies)], key=lambda p: int(p["PartNumber"]))
    if not parts:
        return False  # nothing but empty partials: the plain path writes the empty object
    await s3.complete_multipart_upload(
        Bucket=storage.bucket, Key=key, UploadId=final.mpu, MultipartUpload={"Parts": parts}
    )
    await storage._delete_key(key + ".state")
    return True


async def _size(storage: S3Storage, name: str, state: S3State | None, final_key: str) -> int:
    if state is not None and state.placed and state.placed.key == final_key:
        return state.held
    size = await storage._object_size(storage._key(name))
    if size is None:
        if state is None or state.held:  # an empty partial has a state and no object
            raise StoredBytesMissing(f"partial upload {name} is not in the store")
        return 0
    return size
