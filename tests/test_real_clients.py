"""Real tus clients against a real `haul serve`: tus-js-client (npm, under Node) and tuspy."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import JS_DIR, TUS, env_without_proxy, random_file, sha256_file

MiB = 1 << 20


def _node(options: dict[str, object]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["node", str(JS_DIR / "tus_upload.mjs"), json.dumps(options)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_without_proxy(),
    )


def _result(proc: subprocess.Popen[str], timeout: float = 300) -> dict[str, object]:
    out, err = proc.communicate(timeout=timeout)
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert lines, f"no output from tus-js-client; stderr: {err[-2000:]}"
    return lines[-1]


def _download_digest(client: httpx.Client, url: str) -> str:
    import hashlib

    digest = hashlib.sha256()
    with client.stream("GET", url) as response:
        assert response.status_code == 200
        for block in response.iter_bytes(MiB):
            digest.update(block)
    return digest.hexdigest()


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"chunkSize": 3 * MiB},
        {"parallelUploads": 4},
        {"uploadDataDuringCreation": True, "chunkSize": 5 * MiB},
        {"parallelUploads": 3, "chunkSize": 2 * MiB},
    ],
    ids=["single-request", "chunked", "parallel-4", "data-during-creation", "parallel-chunked"],
)
def test_tus_js_client_uploads(server, client, tmp_path: Path, options) -> None:
    source = random_file(tmp_path / "source.bin", 24 * MiB + 77, seed=11)
    result = _result(_node({"file": str(source), "endpoint": server.endpoint, **options}))
    assert "url" in result, result
    assert _download_digest(client, str(result["url"])) == sha256_file(source)


def test_tus_js_client_abort_terminates(server, client, tmp_path: Path) -> None:
    source = random_file(tmp_path / "source.bin", 64 * MiB, seed=12)
    result = _result(
        _node({"file": str(source), "endpoint": server.endpoint, "chunkSize": 4 * MiB,
               "abortAfterBytes": 4 * MiB})
    )  # fmt: skip
    assert "aborted" in result, result
    url = str(result["aborted"])
    assert client.head(url, headers=TUS).status_code == 410  # DELETE answered 204
    assert list((server.data_dir / "uploads").iterdir()) == []


def test_tus_js_client_survives_server_kill_9(make_server, client, tmp_path: Path) -> None:
    source = random_file(tmp_path / "source.bin", 256 * MiB, seed=13)
    server = make_server()
    proc = _node({"file": str(source), "endpoint": server.endpoint, "chunkSize": 8 * MiB})
    assert proc.stdout is not None
    for line in proc.stdout:  # wait until a good part has been sent
        if json.loads(line).get("progress", 0) >= 24 * MiB:
            break
    server.kill()
    time.sleep(1)
    assert proc.poll() is None  # the client is stuck retrying: it cannot finish without us
    server.start()
    result = _result(proc)
    assert "url" in result, result
    assert _download_digest(client, str(result["url"])) == sha256_file(source)


def test_tus_js_client_parallel_1gib(server, client, tmp_path: Path) -> None:
    """The acceptance path: 1 GiB with parallelUploads: 4, bytes identical."""
    source = random_file(tmp_path / "big.bin", 1024 * MiB, seed=14)
    result = _result(
        _node({"file": str(source), "endpoint": server.endpoint, "parallelUploads": 4})
    )
    assert "url" in result, result
    assert _download_digest(client, str(result["url"])) == sha256_file(source)


def test_tuspy_uploads(server, client, tmp_path: Path) -> None:
    from tusclient import client as tus_client

    source = random_file(tmp_path / "source.bin", 9 * MiB + 5, seed=15)
    tus = tus_client.TusClient(server.endpoint)
    uploader = tus.uploader(str(source), chunk_size=2 * MiB, metadata={"filename": "source.bin"})
    uploader.upload()
    assert uploader.url is not None
    assert _download_digest(client, uploader.url) == sha256_file(source)
    status = client.head(uploader.url, headers=TUS)
    assert status.headers["upload-offset"] == str(9 * MiB + 5)


def test_tuspy_resumes_an_interrupted_upload(server, client, tmp_path: Path) -> None:
    from tusclient import client as tus_client

    source = random_file(tmp_path / "source.bin", 6 * MiB, seed=16)
    tus = tus_client.TusClient(server.endpoint)
    first = tus.uploader(str(source), chunk_size=MiB)
    first.upload(stop_at=2 * MiB)
    assert first.url is not None
    again = tus.uploader(str(source), chunk_size=MiB, url=first.url)
    assert again.offset == 2 * MiB  # asked the server with HEAD
    again.upload()
    assert _download_digest(client, first.url) == sha256_file(source)
