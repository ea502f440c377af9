"""The client never waits for its hash: `haul upload` sends from the first moment while the
file's SHA-256 is computed alongside, and still declares it on every upload, so the server
verifies what it stored. Against a real `haul serve`, through a proxy that records every
request."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

import haul
from tests.helpers import HAUL, HaulServer, env_without_proxy, random_file, sha256_file
from tests.proxy import ChaosProxy
from tests.test_client_errors import FaultProxy, Seen

MiB = 1 << 20


@pytest.fixture
def recorder(server: HaulServer) -> Iterator[FaultProxy]:
    proxy = FaultProxy(server.port).start()
    yield proxy
    proxy.stop()


def _repr_digest(path: Path) -> str:
    return "sha-256=:" + base64.b64encode(bytes.fromhex(sha256_file(path))).decode() + ":"


def _declaring(seen: list[Seen], digest: str) -> list[Seen]:
    return [s for s in seen if s.headers.get("repr-digest") == digest]


@pytest.mark.parametrize("parallel", [1, 4])
def test_a_file_the_server_lacks_is_sent_at_once_and_its_digest_verified(
    server: HaulServer, recorder: FaultProxy, tmp_path: Path, parallel: int
) -> None:
    size = 64 * MiB + 5
    source = random_file(tmp_path / "new.bin", size, seed=61)
    digest = _repr_digest(source)
    client = haul.Client(recorder.url, state_dir=tmp_path / "state", parallel=parallel)
    result = client.upload(source)
    assert result.instant is False
    assert result.sha256 == sha256_file(source)
    assert result.sent == size
    seen = recorder.seen
    patches = [s for s in seen if s.method == "PATCH" and s.body_size]
    assert sum(p.body_size for p in patches) == size
    # Every PATCH is guarded by its own checksum.
    assert all("upload-checksum" in p.headers for p in patches)
    # The instant-upload check (a creation declaring the digest) came once the hash was ready
    # and the bytes were on their way; the server lacked the content, so it was removed again.
    (probe,) = [
        s
        for s in _declaring(seen, digest)
        if s.method == "POST" and "upload-concat" not in s.headers
    ]
    assert probe.headers["upload-length"] == str(size)
    if parallel == 1:
        assert patches[0].at < probe.at
    else:  # the partials and the final come first, then the bytes and the check side by side
        (final,) = [s for s in seen if s.headers.get("upload-concat", "").startswith("final;")]
        assert final.at < probe.at
    assert [s.status for s in seen if s.method == "DELETE"] == [204]
    # The digest is declared where the server verifies it: on the last PATCH of a sequential
    # upload, for the final upload of a parallel one.
    declared = [s for s in _declaring(seen, digest) if s is not probe]
    assert len(declared) == 1
    if parallel == 1:
        assert declared[0] is patches[-1]
    else:  # to the final (created before the bytes: see below), in an empty PATCH
        final = urlsplit(result.url).path
        assert (declared[0].method, declared[0].path, declared[0].body_size) == ("PATCH", final, 0)
    assert declared[0].status == 204
    url = result.url.replace(recorder.url, server.url)
    answer = httpx.head(url, headers={"Tus-Resumable": "1.0.0"})
    assert answer.headers["repr-digest"] == digest  # verified by the server, as declared


def test_without_dedup_the_digest_is_still_declared_and_no_check_is_made(
    recorder: FaultProxy, tmp_path: Path
) -> None:
    source = random_file(tmp_path / "plain.bin", 20 * MiB, seed=62)
    digest = _repr_digest(source)
    client = haul.Client(recorder.url, state_dir=tmp_path / "state", parallel=1)
    result = client.upload(source, dedup=False)
    assert result.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    (declared,) = _declaring(recorder.seen, digest)
    assert (declared.method, declared.status) == ("PATCH", 204)
    assert recorder.requests("DELETE") == []
    assert len(recorder.requests("POST")) == 1


def test_a_parallel_upload_creates_its_partials_and_final_before_any_byte(
    server: HaulServer, recorder: FaultProxy, tmp_path: Path
) -> None:
    """So that a server on object storage can write each partial in place, as parts of the
    final object: it knows the whole layout before the first byte, and every partial but the
    last is a whole number of 8 MiB parts."""
    size = 100 * MiB + 7
    source = random_file(tmp_path / "layout.bin", size, seed=63)
    client = haul.Client(recorder.url, state_dir=tmp_path / "state", parallel=4)
    result = client.upload(source, dedup=False)
    seen = recorder.seen
    partials = [s for s in seen if s.headers.get("upload-concat") == "partial"]
    finals = [s for s in seen if s.headers.get("upload-concat", "").startswith("final;")]
    first_byte = min(s.at for s in seen if s.method == "PATCH" and s.body_size)
    assert len(finals) == 1
    assert all(s.at < first_byte for s in [*partials, *finals])
    lengths = [int(s.headers["upload-length"]) for s in partials]
    assert sum(lengths) == size
    assert lengths == [32 * MiB] * 3 + [4 * MiB + 7]  # one per stream, in 8 MiB units
    assert all(length % (8 * MiB) == 0 for length in sorted(lengths)[1:])  # all but the last
    # The partials, in the final's order, are the ones created (same paths, same count).
    named = finals[0].headers["upload-concat"].removeprefix("final;").split(" ")
    assert len(named) == len(set(named)) == 4
    url = result.url.replace(recorder.url, server.url)
    answer = httpx.head(url, headers={"Tus-Resumable": "1.0.0"})
    assert answer.headers["repr-digest"] == _repr_digest(source)
    assert answer.headers["upload-offset"] == str(size)


def test_a_resumed_parallel_upload_continues_its_partials_and_makes_no_second_final(
    server: HaulServer, tmp_path: Path
) -> None:
    size = 48 * MiB
    source = random_file(tmp_path / "resumed.bin", size, seed=64)
    state = tmp_path / "state"
    proxy = ChaosProxy(server.port, rate=8 * MiB).start()
    try:
        args = ("upload", str(source), "--server", proxy.url, "--parallel", "4",
                "--chunk-size", "8MiB", "--json")  # fmt: skip
        env = {**env_without_proxy(), "HAUL_STATE_DIR": str(state)}
        first = subprocess.Popen([HAUL, *args], env=env, stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while proxy.upstream_bytes < size // 3:
            assert first.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.02)
        first.kill()
        first.wait()
        (saved,) = [json.loads(p.read_text()) for p in (state / "uploads").glob("*.json")]
        assert saved["final"] is not None  # the final was made before the bytes, and kept
        before = proxy.upstream_bytes
        proxy.rate = None
        again = subprocess.run([HAUL, *args], env=env, capture_output=True, text=True, timeout=120)
        resent = proxy.upstream_bytes - before
    finally:
        proxy.stop()
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout.strip().splitlines()[-1])
    assert result["resumed"] is True
    assert urlsplit(result["url"]).path == urlsplit(saved["final"]).path
    assert server.log_path is not None
    assert server.log_path.read_text().count("created final upload") == 1
    assert resent < size - size // 3 + 4 * 8 * MiB  # the rest, and at most what was in flight
    url = f"{server.url}{urlsplit(result['url']).path}"
    answer = httpx.head(url, headers={"Tus-Resumable": "1.0.0"})
    assert answer.headers["repr-digest"] == _repr_digest(source)
    assert result["sha256"] == sha256_file(source)
