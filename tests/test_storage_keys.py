"""Where the bytes land: a pre-create hook's storage_key (a key prefix on S3, a subdirectory
on disk), validated so that no answer can reach outside the storage or collide with another
upload, kept through resumes, downloads, garbage collection and deletion."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from haul.core.models import storage_key_problem
from tests.helpers import HAUL, TUS, HaulServer, create, free_port, head, patch
from tests.hook_receiver import HookReceiver
from tests.services import s3_client
from tests.test_s3_server import s3_options

GOOD = ["videos", "videos/2026/alice", "a.b_c-d/E9", "/".join("k" * 8)]
BAD = ["", "../etc", "/absolute", "a//b", "a/", ".hidden", "a/..", "x/" + "0" * 32, "a.parts",
       "b.state", "c.tail.1", "k" * 256, "/".join(["k"] * 9), "sp ace", "é"]  # fmt: skip


@pytest.mark.fast
@pytest.mark.parametrize("key", GOOD)
def test_sane_storage_keys_are_taken(key: str) -> None:
    assert storage_key_problem(key) is None


@pytest.mark.fast
@pytest.mark.parametrize("key", BAD)
def test_unsafe_storage_keys_are_refused(key: str) -> None:
    assert storage_key_problem(key) is not None


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[HookReceiver]:
    hook = HookReceiver(free_port(), tmp_path / "received.jsonl").start()
    yield hook
    hook.stop()


def test_a_hook_chooses_the_folder_on_disk(
    make_server: Callable[..., HaulServer], receiver: HookReceiver, client: httpx.Client
) -> None:
    server = make_server("--hook-url", receiver.url, "--orphan-grace", "0")
    receiver.control(answers={"pre-create": {"storage_key": "videos/alice"}})
    url = create(client, server, 11)
    upload_id = url.rsplit("/", 1)[1]
    assert patch(client, url, 0, b"hello").status_code == 204
    landed = server.data_dir / "uploads" / "videos" / "alice" / upload_id
    assert landed.read_bytes() == b"hello"
    assert not (server.data_dir / "uploads" / upload_id).exists()
    assert head(client, url).headers["upload-offset"] == "5"  # the offset comes from there
    assert patch(client, url, 5, b" world").status_code == 204
    assert client.get(url).content == b"hello world"
    collected = subprocess.run(
        [HAUL, "gc", "--data-dir", str(server.data_dir), "--orphan-grace", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert collected.returncode == 0, collected.stderr
    assert json.loads(collected.stdout)["orphans"] == 0  # its own, not an orphan
    assert landed.read_bytes() == b"hello world"
    created = [e for e in receiver.delivered() if e["type"] == "pre-create"]
    assert created[0]["upload"]["storage_key"] is None  # asked before it was chosen
    assert client.delete(url, headers=TUS).status_code == 204
    assert not (server.data_dir / "uploads" / "videos").exists()  # its folders went with it


@pytest.mark.parametrize("key", ["../outside", "x/" + "f" * 32, "a//b"])
def test_an_unusable_storage_key_creates_nothing(
    make_server: Callable[..., HaulServer], receiver: HookReceiver, client: httpx.Client,
    key: str,
) -> None:  # fmt: skip
    server = make_server("--hook-url", receiver.url)
    receiver.control(answers={"pre-create": {"storage_key": key}})
    refused = client.post(server.endpoint, headers={**TUS, "Upload-Length": "3"})
    assert refused.status_code == 503
    assert refused.text.startswith("ERR_HOOK_FAILED: the pre-create hook chose an unusable")
    assert "retry-after" in refused.headers
    assert client.get(server.url + "/api/uploads").json()["uploads"] == []
    assert sorted(p.name for p in (server.data_dir / "uploads").iterdir()) == []
    assert not (server.data_dir.parent / "outside").exists()


def test_a_hook_chooses_the_key_prefix_on_s3(
    make_server: Callable[..., HaulServer], receiver: HookReceiver, client: httpx.Client,
    rgw: str, s3_bucket: str,
) -> None:  # fmt: skip
    server = make_server("--hook-url", receiver.url, *s3_options(rgw, s3_bucket))
    receiver.control(answers={"pre-create": {"storage_key": "tenant-7/scans"}})
    data = b"s" * (6 << 20)  # a part and a tail
    url = create(client, server, len(data))
    upload_id = url.rsplit("/", 1)[1]
    assert patch(client, url, 0, data[:3000]).status_code == 204
    assert patch(client, url, 3000, data[3000:]).status_code == 204
    assert client.get(url).content == data

    async def keys() -> list[str]:
        async with s3_client(rgw) as s3:
            listed = await s3.list_objects_v2(Bucket=s3_bucket)
            return [item["Key"] for item in listed.get("Contents", [])]

    assert asyncio.run(keys()) == [f"haul/tenant-7/scans/{upload_id}"]
    assert client.delete(url, headers=TUS).status_code == 204
    assert asyncio.run(keys()) == []
