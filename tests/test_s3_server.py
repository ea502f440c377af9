"""`haul serve --storage s3` against a real S3 server (Ceph RGW): uploads, deferred lengths
whose tails must survive between requests and across nodes, crashes, termination."""

from __future__ import annotations

import itertools
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import HAUL, OCTETS, TUS, HaulServer, env_without_proxy, random_file, sha256_file
from tests.services import S3_ACCESS, S3_SECRET, run_async, s3_client

MiB = 1 << 20


def s3_options(rgw: str, bucket: str) -> list[str]:
    return ["--storage", "s3", "--s3-endpoint", rgw, "--s3-bucket", bucket,
            "--s3-access-key", S3_ACCESS, "--s3-secret-key", S3_SECRET,
            "--s3-part-size", "5MiB"]  # fmt: skip


def bucket_listing(rgw: str, bucket: str) -> tuple[list[str], list[str]]:
    """(object keys, keys with an unfinished multipart upload) in the bucket."""

    async def listing() -> tuple[list[str], list[str]]:
        async with s3_client(rgw) as s3:
            objects: Any = await s3.list_objects_v2(Bucket=bucket)
            multipart: Any = await s3.list_multipart_uploads(Bucket=bucket)
        return ([o["Key"] for o in objects.get("Contents", [])],
                [u["Key"] for u in multipart.get("Uploads", [])])  # fmt: skip

    return run_async(listing())


def patch_at(client: httpx.Client, url: str, offset: int | str, data: bytes) -> None:
    headers = {**TUS, "Upload-Offset": str(offset), "Content-Type": OCTETS}
    client.patch(url, content=data, headers=headers).raise_for_status()


@pytest.fixture
def s3_server(make_server: Callable[..., HaulServer], rgw: str, s3_bucket: str) -> HaulServer:
    return make_server(*s3_options(rgw, s3_bucket))


def test_cli_upload_parallel_and_instant(s3_server: HaulServer, tmp_path: Path) -> None:
    source = random_file(tmp_path / "big.bin", 40 * MiB + 17, seed=41)
    command = [HAUL, "upload", str(source), "--server", s3_server.url, "--json", "--no-resume",
               "--chunk-size", "8MiB", "--parallel", "4"]  # fmt: skip
    first = subprocess.run(command, capture_output=True, text=True, timeout=120,
                           env=env_without_proxy())  # fmt: skip
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout.strip().splitlines()[-1])
    assert result["parallel"] == 4
    with httpx.Client(trust_env=False, timeout=60) as client:
        body = client.get(result["url"]).content
        ranged = client.get(result["url"], headers={"Range": "bytes=10-20"})
    import hashlib

    assert hashlib.sha256(body).hexdigest() == sha256_file(source)
    assert ranged.status_code == 206
    assert ranged.content == body[10:21]
    again = subprocess.run(command, capture_output=True, text=True, timeout=120,
                           env=env_without_proxy())  # fmt: skip
    assert json.loads(again.stdout.strip().splitlines()[-1])["instant"] is True


def test_deferred_length_keeps_every_tail_across_nodes(
    make_server: Callable[..., HaulServer], rgw: str, s3_bucket: str, pg_dsn: str
) -> None:
    # Two nodes share records (PostgreSQL) and bytes (S3) but no disk: tails under 5 MiB
    # must live in S3 between requests, or the next node would lose them (tusd's bug).
    options = [*s3_options(rgw, s3_bucket), "--db", pg_dsn]
    nodes = [make_server(*options), make_server(*options)]
    data = bytes(range(256)) * (11 * MiB // 256) + b"end"
    with httpx.Client(trust_env=False, timeout=60) as client:
        created = client.post(nodes[0].endpoint, headers={**TUS, "Upload-Defer-Length": "1"})
        path = httpx.URL(created.headers["location"]).path
        cuts = [0, MiB, MiB + 10, 4 * MiB, 9 * MiB, len(data)]
        for index, (first, stop) in enumerate(itertools.pairwise(cuts)):
            headers = {**TUS, "Upload-Offset": str(first), "Content-Type": OCTETS}
            if stop == len(data):
                headers["Upload-Length"] = str(len(data))  # declared with the last bytes
            node = nodes[index % 2]
            answer = client.patch(node.url + path, content=data[first:stop], headers=headers)
            assert answer.status_code == 204, answer.text
            assert answer.headers["upload-offset"] == str(stop)
        assert client.get(nodes[1].url + path).content == data


def test_a_node_killed_mid_upload_resumes_from_what_s3_holds(
    s3_server: HaulServer, tmp_path: Path
) -> None:
    data = random_file(tmp_path / "resume.bin", 12 * MiB, seed=42).read_bytes()
    with httpx.Client(trust_env=False, timeout=60) as client:
        url = client.post(
            s3_server.endpoint, headers={**TUS, "Upload-Length": str(len(data))}
        ).headers["location"]
        patch_at(client, url, "0", data[: 7 * MiB])
    s3_server.restart()  # kill -9, start again
    with httpx.Client(trust_env=False, timeout=60) as client:
        offset = int(client.head(url, headers=TUS).headers["upload-offset"])
        assert offset == 7 * MiB
        patch_at(client, url, offset, data[offset:])
        assert client.get(url).content == data


def test_termination_removes_objects_and_multipart_uploads(
    s3_server: HaulServer, rgw: str, s3_bucket: str
) -> None:
    with httpx.Client(trust_env=False, timeout=60) as client:
        unfinished = client.post(s3_server.endpoint, headers={**TUS, "Upload-Length": str(9 * MiB)})
        url = unfinished.headers["location"]
        patch_at(client, url, "0", b"z" * (6 * MiB))
        done = client.post(s3_server.endpoint, headers={**TUS, "Upload-Length": "3"})
        patch_at(client, done.headers["location"], "0", b"abc")
        objects, multipart = bucket_listing(rgw, s3_bucket)
        assert multipart  # the unfinished one is a multipart upload in progress
        assert client.delete(url, headers=TUS).status_code == 204
        assert client.delete(done.headers["location"], headers=TUS).status_code == 204
    objects, multipart = bucket_listing(rgw, s3_bucket)
    assert objects == []
    assert multipart == []
