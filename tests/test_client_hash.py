"""The client never waits for its hash: `haul upload` sends from the first moment while the
file's SHA-256 is computed alongside, and still declares it on every upload, so the server
verifies what it stored. Against a real `haul serve`, through a proxy that records every
request."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import haul
from tests.helpers import HaulServer, random_file, sha256_file
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
    # The instant-upload check (a creation declaring the digest) came once the hash was ready,
    # after the first bytes had left; the server lacked the content, so it was removed again.
    (probe,) = [
        s
        for s in _declaring(seen, digest)
        if s.method == "POST" and "upload-concat" not in s.headers
    ]
    assert probe.headers["upload-length"] == str(size)
    assert patches[0].at < probe.at
    assert [s.status for s in seen if s.method == "DELETE"] == [204]
    # The digest is declared where the server verifies it: on the last PATCH of a sequential
    # upload, for the final upload of a parallel one.
    declared = [s for s in _declaring(seen, digest) if s is not probe]
    assert len(declared) == 1
    if parallel == 1:
        assert declared[0] is patches[-1]
    else:
        assert declared[0].method == "POST"
        assert declared[0].headers["upload-concat"].startswith("final;")
    assert declared[0].status in (201, 204)
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
