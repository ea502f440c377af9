"""`--s3-equal-parts` on a real S3 server (Ceph RGW): every part of a multipart upload but the
last has one size (what Cloudflare R2 requires), whatever sizes the requests have and for
concatenations too. Checked twice: the parts the store lists before completion, and the
completed object's ETag, which S3 derives from its parts (MD5 of the parts' MD5s, "-count")."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from haul.storage.s3_copy import Segment, windows
from haul.storage.s3_parts import MAX_PARTS, equal_size, growing_size
from haul.storage.s3_state import S3State
from tests.helpers import TUS, HaulServer, create, patch
from tests.services import run_async, s3_client
from tests.test_s3_server import s3_options

MiB = 1 << 20
PART = 5 * MiB


def multipart_etag(data: bytes, size: int) -> str:
    parts = [data[i : i + size] for i in range(0, len(data), size)]
    joined = b"".join(hashlib.md5(p).digest() for p in parts)
    return f'"{hashlib.md5(joined).hexdigest()}-{len(parts)}"'


def _stored(rgw: str, bucket: str, url: str) -> dict[str, Any]:
    upload_id = url.rstrip("/").rsplit("/", 1)[-1]

    async def head() -> dict[str, Any]:
        async with s3_client(rgw) as s3:
            return dict(await s3.head_object(Bucket=bucket, Key=f"haul/{upload_id}"))

    return run_async(head())


def _listed_parts(rgw: str, bucket: str, url: str) -> list[int]:
    upload_id = url.rstrip("/").rsplit("/", 1)[-1]

    async def parts() -> list[int]:
        async with s3_client(rgw) as s3:
            state: Any = await s3.get_object(Bucket=bucket, Key=f"haul/{upload_id}.state")
            async with state["Body"] as body:
                mpu = S3State.decode(await body.read()).mpu
            listed: Any = await s3.list_parts(Bucket=bucket, Key=f"haul/{upload_id}", UploadId=mpu)
        return [int(p["Size"]) for p in listed.get("Parts", [])]

    return run_async(parts())


def test_sequential_requests_of_odd_sizes_make_equal_parts(
    make_server: Callable[..., HaulServer], rgw: str, s3_bucket: str
) -> None:
    server = make_server(*s3_options(rgw, s3_bucket), "--s3-equal-parts")
    sizes = [3 * MiB + 1, 4 * MiB + 7, 6 * MiB + 3, 1, 12 * MiB + 11, 2 * MiB + 5]
    data = hashlib.shake_256(b"equal").digest(sum(sizes))
    with httpx.Client(trust_env=False, timeout=120) as client:
        url = create(client, server, len(data))
        offset = 0
        for size in sizes[:-1]:
            answer = patch(client, url, offset, data[offset : offset + size])
            assert answer.status_code == 204, answer.text
            offset += size
        listed = _listed_parts(rgw, s3_bucket, url)
        assert listed == [PART] * (offset // PART)  # the rest waits as the tail
        assert patch(client, url, offset, data[offset:]).status_code == 204
        assert client.get(url).content == data
    assert _stored(rgw, s3_bucket, url)["ETag"] == multipart_etag(data, PART)


def test_concatenation_is_re_parted_to_equal_parts(
    make_server: Callable[..., HaulServer], rgw: str, s3_bucket: str
) -> None:
    server = make_server(*s3_options(rgw, s3_bucket), "--s3-equal-parts")
    pieces = [hashlib.shake_256(b"%d" % n).digest(size)
              for n, size in enumerate([7 * MiB + 3, 9 * MiB + 5, 2 * MiB + 1])]  # fmt: skip
    with httpx.Client(trust_env=False, timeout=120) as client:
        partials = []
        for piece in pieces:
            url = create(client, server, len(piece), **{"Upload-Concat": "partial"})
            assert patch(client, url, 0, piece).status_code == 204
            partials.append(url.split("/files/", 1)[1])
        final = client.post(server.endpoint, headers={
            **TUS, "Upload-Concat": "final;" + " ".join(f"/files/{p}" for p in partials)
        })  # fmt: skip
        assert final.status_code == 201, final.text
        url = final.headers["location"]
        whole = b"".join(pieces)
        assert client.get(url).content == whole
    assert _stored(rgw, s3_bucket, url)["ETag"] == multipart_etag(whole, PART)


@pytest.mark.fast
def test_equal_part_size_lets_10000_parts_hold_the_length() -> None:
    assert equal_size(PART, None) == PART  # a deferred length: the configured size
    assert equal_size(PART, 3) == PART
    assert equal_size(PART, PART * MAX_PARTS) == PART
    big = equal_size(PART, PART * MAX_PARTS + 1)  # one byte more needs bigger parts
    assert big > PART
    assert big % MiB == 0
    assert big * MAX_PARTS >= PART * MAX_PARTS + 1
    five_tib = 5 * 1024 * 1024 * MiB
    assert equal_size(PART, five_tib) * MAX_PARTS >= five_tib
    assert growing_size(PART, 1000) == PART
    assert growing_size(PART, 1001) == 2 * PART  # without the option sizes grow


@pytest.mark.fast
def test_windows_cut_sources_into_equal_parts() -> None:
    cut = windows([("a", 7), ("b", 0), ("c", 9), ("d", 2)], 5)
    assert [sum(s.stop - s.first for s in part) for part in cut] == [5, 5, 5, 3]
    assert cut[0] == [Segment("a", 0, 5)]  # inside one source: the store copies it
    assert cut[1] == [Segment("a", 5, 7), Segment("c", 0, 3)]  # across two: through haul
    assert cut[3] == [Segment("c", 8, 9), Segment("d", 0, 2)]
    assert windows([], 5) == []
