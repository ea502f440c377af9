"""Parallel uploads on S3 without a second copy: partials created with their lengths, then the
final upload, then the partials' bytes land straight in the final's multipart upload (a real
`haul serve --storage s3` on Ceph RGW). Other orders and unaligned layouts copy, as before."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from haul.storage.s3_copy import COPIES_AT_ONCE, few_at_a_time
from tests.helpers import OCTETS, TUS, HaulServer
from tests.services import run_async, s3_client
from tests.test_s3_server import bucket_listing, patch_at, s3_options

MiB = 1 << 20


@pytest.fixture
def s3_server(make_server: Callable[..., HaulServer], rgw: str, s3_bucket: str) -> HaulServer:
    return make_server(*s3_options(rgw, s3_bucket))


def partial(client: httpx.Client, server: HaulServer, length: int) -> str:
    made = client.post(
        server.endpoint, headers={**TUS, "Upload-Length": str(length), "Upload-Concat": "partial"}
    )
    assert made.status_code == 201, made.text
    return str(made.headers["location"])


def final(client: httpx.Client, server: HaulServer, urls: list[str]) -> str:
    made = client.post(server.endpoint, headers={**TUS, "Upload-Concat": "final;" + " ".join(urls)})
    assert made.status_code == 201, made.text
    return str(made.headers["location"])


def final_parts(rgw: str, bucket: str, final_url: str) -> list[tuple[int, int]]:
    """(number, size) of the parts the final's unfinished multipart upload has received."""
    key = "haul/" + final_url.rsplit("/", 1)[1]

    async def listing() -> list[tuple[int, int]]:
        async with s3_client(rgw) as s3:
            uploads: Any = await s3.list_multipart_uploads(Bucket=bucket)
            [mpu] = [u["UploadId"] for u in uploads.get("Uploads", []) if u["Key"] == key]
            parts: Any = await s3.list_parts(Bucket=bucket, Key=key, UploadId=mpu)
        return [(p["PartNumber"], p["Size"]) for p in parts.get("Parts", [])]

    return run_async(listing())


def send_all(url: str, data: bytes, *, piece: int = 3 * MiB) -> None:
    with httpx.Client(trust_env=False, timeout=120) as client:
        for at in range(0, len(data), piece):
            patch_at(client, url, at, data[at : at + piece])


def interrupted_then_resumed(url: str, data: bytes, cut_at: int) -> None:
    """A request that dies after ``cut_at`` bytes, then the client resumes from HEAD."""

    def body() -> Iterator[bytes]:
        for at in range(0, cut_at, MiB):
            yield data[at : min(at + MiB, cut_at)]
        raise ConnectionAbortedError("the client went away")

    headers = {**TUS, "Upload-Offset": "0", "Content-Type": OCTETS}
    with httpx.Client(trust_env=False, timeout=120) as client:
        with pytest.raises(ConnectionAbortedError):
            client.patch(url, content=body(), headers=headers)
        offset = 0
        for _ in range(1000):  # as tus clients do: ask for the offset, send from there
            offset = int(client.head(url, headers=TUS).headers["upload-offset"])
            assert 0 <= offset <= cut_at or offset == len(data)  # never more than arrived
            if offset == len(data):
                break
            headers["Upload-Offset"] = str(offset)
            answer = client.patch(url, content=data[offset:], headers=headers)
            # 409/423: the server was still committing the interrupted request.
            assert answer.status_code in (204, 409, 423), answer.text


def test_partials_written_after_the_final_land_in_its_place(
    s3_server: HaulServer, rgw: str, s3_bucket: str
) -> None:
    pieces = [os.urandom(10 * MiB), os.urandom(10 * MiB), os.urandom(7 * MiB + 123)]
    with httpx.Client(trust_env=False, timeout=120) as client:
        urls = [partial(client, s3_server, len(p)) for p in pieces]
        whole = final(client, s3_server, urls)
        assert "upload-offset" not in client.head(whole, headers=TUS).headers  # unfinished
        workers = [
            threading.Thread(target=send_all, args=(urls[0], pieces[0])),
            threading.Thread(target=interrupted_then_resumed, args=(urls[1], pieces[1], 6 * MiB)),
            threading.Thread(target=send_all, args=(urls[2], pieces[2][: 5 * MiB])),
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        for url, size in zip(urls, (10 * MiB, 10 * MiB, 5 * MiB), strict=True):
            assert client.head(url, headers=TUS).headers["upload-offset"] == str(size)
        # A complete placed partial has no object of its own: a clear answer, not a 500.
        alone = client.get(urls[0])
        assert alone.status_code == 410, alone.text
        # Every byte so far sits in the final's multipart upload, at its place (5 MiB parts:
        # partial 0 is parts 1-2, partial 1 parts 3-4, partial 2 begins at part 5); the
        # partials have no object of their own and nothing will be copied.
        assert final_parts(rgw, s3_bucket, whole) == [(n, 5 * MiB) for n in range(1, 6)]
        objects, _ = bucket_listing(rgw, s3_bucket)
        assert all(key.endswith(".state") for key in objects), objects
        patch_at(client, urls[2], 5 * MiB, pieces[2][5 * MiB :])
        got = client.get(whole)
        assert got.status_code == 200
        assert got.content == b"".join(pieces)
        assert client.head(urls[0], headers=TUS).status_code == 410  # consumed
    objects, multipart = bucket_listing(rgw, s3_bucket)
    assert objects == ["haul/" + whole.rsplit("/", 1)[1]]  # the partials' states are gone
    assert multipart == []


def test_partials_written_first_are_copied_as_before(
    s3_server: HaulServer, rgw: str, s3_bucket: str
) -> None:
    """tus-js-client's order: every partial is complete before the final is created."""
    pieces = [os.urandom(6 * MiB), os.urandom(5 * MiB + 1), b"tail"]
    with httpx.Client(trust_env=False, timeout=120) as client:
        urls = [partial(client, s3_server, len(p)) for p in pieces]
        for url, data in zip(urls, pieces, strict=True):
            send_all(url, data)
        whole = final(client, s3_server, urls)
        assert client.get(whole).content == b"".join(pieces)


def test_an_unaligned_layout_falls_back_to_copying(
    s3_server: HaulServer, rgw: str, s3_bucket: str
) -> None:
    # Boundaries 6 MiB and 12 MiB + 1 share no divisor of 5 MiB or more: no place for parts.
    pieces = [os.urandom(6 * MiB), os.urandom(6 * MiB + 1), os.urandom(100)]
    with httpx.Client(trust_env=False, timeout=120) as client:
        urls = [partial(client, s3_server, len(p)) for p in pieces]
        whole = final(client, s3_server, urls)
        send_all(urls[0], pieces[0])
        send_all(urls[1], pieces[1])
        assert final_parts(rgw, s3_bucket, whole) == []  # nothing went to the final
        send_all(urls[2], pieces[2])
        assert client.get(whole).content == b"".join(pieces)


def test_a_partial_with_bytes_before_the_final_is_copied_into_its_place(
    s3_server: HaulServer, rgw: str, s3_bucket: str
) -> None:
    pieces = [os.urandom(10 * MiB), os.urandom(10 * MiB), os.urandom(3 * MiB)]
    with httpx.Client(trust_env=False, timeout=120) as client:
        urls = [partial(client, s3_server, len(p)) for p in pieces]
        send_all(urls[0], pieces[0][: 4 * MiB])  # bytes before the final exists: not placed
        whole = final(client, s3_server, urls)
        send_all(urls[1], pieces[1])
        assert final_parts(rgw, s3_bucket, whole) == [(3, 5 * MiB), (4, 5 * MiB)]
        for at in range(4 * MiB, 10 * MiB, 3 * MiB):
            patch_at(client, urls[0], at, pieces[0][at : at + 3 * MiB])
        assert final_parts(rgw, s3_bucket, whole) == [(3, 5 * MiB), (4, 5 * MiB)]
        send_all(urls[2], pieces[2])
        assert client.get(whole).content == b"".join(pieces)


def test_deleting_a_placed_partial_keeps_the_finals_upload_deleting_the_final_ends_all(
    s3_server: HaulServer, rgw: str, s3_bucket: str
) -> None:
    with httpx.Client(trust_env=False, timeout=120) as client:
        urls = [partial(client, s3_server, 10 * MiB), partial(client, s3_server, 3 * MiB)]
        whole = final(client, s3_server, urls)
        send_all(urls[0], os.urandom(10 * MiB))
        send_all(urls[1], os.urandom(MiB))
        assert client.delete(urls[1], headers=TUS).status_code == 204
        # The final's multipart upload, with the other partial's parts, is still there.
        assert final_parts(rgw, s3_bucket, whole) == [(1, 5 * MiB), (2, 5 * MiB)]
        assert client.delete(whole, headers=TUS).status_code == 204
        final_key = "haul/" + whole.rsplit("/", 1)[1]
        assert final_key not in bucket_listing(rgw, s3_bucket)[1]  # aborted with the final
        # Its placed partial's 10 MiB were parts of that upload: the partial ended with it,
        # rather than report bytes no longer stored (a client sends it again).
        assert client.head(urls[0], headers=TUS).status_code in (404, 410)
    assert bucket_listing(rgw, s3_bucket) == ([], [])


def test_a_second_final_of_the_same_partials_does_not_take_them_from_the_first(
    s3_server: HaulServer, rgw: str, s3_bucket: str
) -> None:
    pieces = [os.urandom(5 * MiB), os.urandom(5 * MiB)]
    with httpx.Client(trust_env=False, timeout=120) as client:
        urls = [partial(client, s3_server, len(p)) for p in pieces]
        first = final(client, s3_server, urls)
        second = final(client, s3_server, urls[::-1])  # another order: another final upload
        for url, data in zip(urls, pieces, strict=True):
            send_all(url, data)
        assert client.get(first).content == b"".join(pieces)
        # The partials were consumed by the first one, as with copying.
        assert client.head(second, headers=TUS).status_code == 410


@pytest.mark.fast
async def test_copies_inside_the_store_run_a_few_at_a_time_and_fail_as_they_failed() -> None:
    """A concatenation's UploadPartCopy calls overlap (one after another, four partials took
    four times one), at most COPIES_AT_ONCE together, their results in part order; the first
    failure stops the rest and arrives as itself (a missing source is told by its type)."""
    running, most = 0, 0

    def job(number: int, fail: bool = False) -> Callable[[], Any]:
        async def run() -> int:
            nonlocal running, most
            running += 1
            most = max(most, running)
            try:
                await asyncio.sleep(0.01 * (10 - number))  # later parts finish first
                if fail:
                    raise LookupError(f"part {number}'s source is gone")
                return number
            finally:
                running -= 1

        return run

    assert await few_at_a_time([job(n) for n in range(10)]) == list(range(10))
    assert most == COPIES_AT_ONCE
    with pytest.raises(LookupError, match="part 3's source is gone"):
        await few_at_a_time([job(n, fail=n == 3) for n in range(10)])
    assert running == 0  # nothing left running behind the failure
