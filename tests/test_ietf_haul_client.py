"""haul's own client over IETF "Resumable Uploads for HTTP" (`haul upload --protocol ietf`)
against a real `haul serve`: the version it picks, what each version puts on the wire, resuming
after the server is killed -9, and clear errors from servers that do not speak the draft."""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import json
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

import haul
from tests.helpers import (
    HAUL,
    JS_DIR,
    HaulServer,
    env_without_proxy,
    free_port,
    random_file,
    sha256_file,
)
from tests.proxy import ChaosProxy

MiB = 1 << 20


class Recording(httpx.AsyncHTTPTransport):
    """The real transport, noting each request's method and headers on the way out."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, httpx.Headers]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.method, request.headers))
        return await super().handle_async_request(request)


def _upload(server: HaulServer, source: Path, state_dir: Path, **options: object) -> tuple[
        haul.UploadResult, Recording]:  # fmt: skip
    recording = Recording()

    async def go() -> haul.UploadResult:
        async with haul.AsyncClient(server.url, state_dir=state_dir, transport=recording) as c:
            return await c.upload_ietf(source, **options)  # type: ignore[arg-type]

    return asyncio.run(go()), recording


def _stored(url: str) -> httpx.Response:
    return httpx.get(url, timeout=120, trust_env=False)


def _cli(state_dir: Path, *args: str) -> subprocess.Popen[str]:
    env = {**env_without_proxy(), "HAUL_STATE_DIR": str(state_dir)}
    return subprocess.Popen([HAUL, "upload", *args, "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip


def _wait_upstream(proxy: ChaosProxy, at_least: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while proxy.upstream_bytes < at_least:
        assert time.monotonic() < deadline, "the upload did not progress"
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)


def test_the_newest_version_the_server_offers_is_spoken(server: HaulServer, tmp_path: Path) -> None:
    source = random_file(tmp_path / "notes.txt", 5 * MiB + 3, seed=31)
    result, recording = _upload(server, source, tmp_path / "state")
    got = _stored(result.url)
    assert hashlib.sha256(got.content).hexdigest() == sha256_file(source) == result.sha256
    assert "notes.txt" in got.headers["content-disposition"]
    assert got.headers["content-type"].startswith("text/plain")
    drafted = [(m, h) for m, h in recording.seen if "upload-draft-interop-version" in h]
    assert {h["upload-draft-interop-version"] for _, h in drafted} == {"9"}
    (creation,) = [h for m, h in drafted if m == "POST"]
    assert creation["upload-complete"] == "?0"
    assert creation["upload-length"] == str(source.stat().st_size)
    assert creation["repr-digest"].startswith("sha-256=:")
    assert "tus-resumable" not in creation
    patches = [h for m, h in drafted if m == "PATCH"]
    assert [h["upload-complete"] for h in patches] == ["?1"]  # the whole rest in one append
    assert patches[0]["content-type"] == "application/partial-upload"
    assert not result.resumed


@pytest.mark.parametrize("version", [3, 6, 8])
def test_a_pinned_version_in_appends_of_a_chosen_size(
    server: HaulServer, tmp_path: Path, version: int
) -> None:
    source = random_file(tmp_path / "data.bin", 7 * MiB + 5, seed=32 + version)
    result, recording = _upload(server, source, tmp_path / "state", version=version,
                                chunk_size=2 * MiB)  # fmt: skip
    assert hashlib.sha256(_stored(result.url).content).hexdigest() == sha256_file(source)
    patches = [h for m, h in recording.seen if m == "PATCH"]
    assert len(patches) == 4
    assert {h["upload-draft-interop-version"] for h in patches} == {str(version)}
    assert [int(h["upload-offset"]) for h in patches] == [0, 2 * MiB, 4 * MiB, 6 * MiB]
    if version == 3:  # draft-01: Upload-Incomplete, the opposite sense
        assert [h["upload-incomplete"] for h in patches] == ["?1", "?1", "?1", "?0"]
    else:
        assert [h["upload-complete"] for h in patches] == ["?0", "?0", "?0", "?1"]
    typed = {h.get("content-type") for h in patches}
    assert typed == ({"application/partial-upload"} if version >= 6 else {None})


def test_the_servers_max_append_size_is_kept_to(
    make_server: Callable[..., HaulServer], tmp_path: Path
) -> None:
    server = make_server("--ietf-max-append-size", "1MiB")
    source = random_file(tmp_path / "data.bin", 3 * MiB + MiB // 2, seed=39)
    result, recording = _upload(server, source, tmp_path / "state")  # no --chunk-size
    patches = [h for m, h in recording.seen if m == "PATCH"]
    assert [int(h["content-length"]) for h in patches] == [MiB, MiB, MiB, MiB // 2]
    assert hashlib.sha256(_stored(result.url).content).hexdigest() == sha256_file(source)


def test_an_empty_file_is_one_creation(server: HaulServer, tmp_path: Path) -> None:
    source = tmp_path / "empty.txt"
    source.write_bytes(b"")
    result, recording = _upload(server, source, tmp_path / "state")
    assert [m for m, h in recording.seen if "upload-draft-interop-version" in h] == [
        "OPTIONS", "POST", "HEAD"]  # fmt: skip
    assert _stored(result.url).content == b""


def test_a_lost_answer_to_the_creation_makes_no_second_upload(
    server: HaulServer, tmp_path: Path
) -> None:
    source = random_file(tmp_path / "file.bin", 3 * MiB, seed=37)
    proxy = ChaosProxy(server.port).start()
    try:
        proxy.lose_answer_to = b"Idempotency-Key"  # the creation, and no other request
        result = haul.Client(proxy.url, state_dir=tmp_path / "state").upload_ietf(source)
        assert proxy.answers_lost == 1
    finally:
        proxy.stop()
    log = server.log_path.read_text()
    assert log.count("its creation was repeated") == 1  # the retry carried the same key
    assert len(re.findall(r"created upload \w+ length=", log)) == 1
    got = _stored(result.url.replace(str(proxy.port), str(server.port)))
    assert hashlib.sha256(got.content).hexdigest() == sha256_file(source)


def test_content_the_owner_already_stored_completes_at_creation(
    make_server: Callable[..., HaulServer], tmp_path: Path
) -> None:
    server = make_server("--api-keys", "alice:alice-key-0123456789abcdef")
    source = random_file(tmp_path / "file.bin", 2 * MiB, seed=38)
    client = haul.Client(server.url, state_dir=tmp_path / "state",
                         token="alice-key-0123456789abcdef")  # fmt: skip
    first = client.upload_ietf(source)
    assert (first.instant, first.sent) == (False, 2 * MiB)
    again = client.upload_ietf(source)  # the declared Repr-Digest matches what alice holds
    assert (again.instant, again.sent) == (True, 0)
    assert again.url != first.url
    got = httpx.get(again.url, trust_env=False, timeout=30,
                    headers={"Authorization": "Bearer alice-key-0123456789abcdef"})  # fmt: skip
    assert hashlib.sha256(got.content).hexdigest() == sha256_file(source)


def test_server_killed_9_mid_upload_the_client_retries_through_the_restart(
    make_server: Callable[..., HaulServer], tmp_path: Path
) -> None:
    server = make_server()
    source = random_file(tmp_path / "big.bin", 40 * MiB, seed=33)
    proxy = ChaosProxy(server.port, rate=16 * MiB).start()
    try:
        proc = _cli(tmp_path / "state", str(source), "--server", proxy.url, "--protocol", "ietf")
        _wait_upstream(proxy, 12 * MiB, proc)
        server.kill()
        time.sleep(1)
        assert proc.poll() is None  # still trying: it cannot finish without the server
        server.start()
        proxy.rate = None
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        result = json.loads(out.splitlines()[-1])
        assert result["sha256"] == sha256_file(source)
        got = _stored(result["url"])
        assert hashlib.sha256(got.content).hexdigest() == sha256_file(source)
        assert result["sent"] < 2 * source.stat().st_size  # resumed, not sent again from 0
    finally:
        proxy.stop()


def test_server_and_client_killed_9_a_rerun_sends_only_the_rest(
    make_server: Callable[..., HaulServer], tmp_path: Path
) -> None:
    server = make_server()
    size = 40 * MiB
    source = random_file(tmp_path / "big.bin", size, seed=34)
    proxy = ChaosProxy(server.port, rate=16 * MiB).start()
    state = tmp_path / "state"
    try:
        args = (str(source), "--server", proxy.url, "--protocol", "ietf")
        first = _cli(state, *args)
        _wait_upstream(proxy, size // 2, first)
        server.kill()
        first.kill()
        first.wait()
        server.start()
        held = int(httpx.head(_saved_url(state), trust_env=False, timeout=30,
                              headers={"Upload-Draft-Interop-Version": "9"})
                   .headers["upload-offset"])  # fmt: skip
        assert 0 < held < size
        before = proxy.upstream_bytes
        proxy.rate = None
        out, err = _cli(state, *args).communicate(timeout=300)
        result = json.loads(out.splitlines()[-1])
        assert result["ok"], err
        assert result["resumed"] is True
        assert result["sent"] == size - held  # exactly the rest
        assert proxy.upstream_bytes - before < size - held + MiB  # headers and HEADs aside
        got = _stored(result["url"])
        assert hashlib.sha256(got.content).hexdigest() == sha256_file(source)
    finally:
        proxy.stop()


def _saved_url(state: Path) -> str:
    (saved,) = list((state / "uploads").glob("*.json"))
    entry = json.loads(saved.read_text())
    assert entry["protocol"] == "ietf-9"
    return str(entry["parts"][0])


@pytest.fixture
def node_tus_server(tmp_path: Path) -> Iterator[str]:
    """The official tus Node server (@tus/server): tus only, no IETF draft."""
    port, store = free_port(), tmp_path / "node-store"
    store.mkdir()
    proc = subprocess.Popen(["node", str(JS_DIR / "tus_node_server.mjs"), str(port), str(store)],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    yield f"http://127.0.0.1:{port}/files"
    proc.kill()
    proc.wait()


def test_a_tus_only_server_is_a_clear_error(node_tus_server: str, tmp_path: Path) -> None:
    source = random_file(tmp_path / "f.bin", 1000, seed=35)
    proc = _cli(tmp_path / "state", str(source), "--server", node_tus_server,
                "--protocol", "ietf")  # fmt: skip
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    (result,) = [json.loads(line) for line in out.splitlines()]
    assert result["ok"] is False
    assert "offers no IETF resumable upload version haul speaks (3, 4, 5, 6, 7, 8, 9)" in (
        result["error"])  # fmt: skip
    assert "--protocol ietf-N" in result["error"]


def test_a_server_without_options_and_an_unoffered_version_are_clear_errors(
    server: HaulServer, tmp_path: Path
) -> None:
    plain = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=plain.serve_forever, daemon=True).start()
    try:
        source = random_file(tmp_path / "f.bin", 1000, seed=36)
        url = f"http://127.0.0.1:{plain.server_address[1]}"
        out, _ = _cli(tmp_path / "state", str(source), "--server", url, "--protocol",
                      "ietf").communicate(timeout=60)  # fmt: skip
        error = json.loads(out)["error"]
        assert "answered OPTIONS with HTTP 501" in error
        assert "does not say it speaks IETF resumable uploads" in error
    finally:
        plain.shutdown()
    with pytest.raises(haul.client.NotSupported, match="versions 3, 4, 5, 6, 7, 8, 9, not 2"):
        _upload(server, source, tmp_path / "state", version=2)
    command = [HAUL, "upload", str(source), "--server", server.url, "--protocol", "ietf-10"]
    bad = subprocess.run(command, capture_output=True, text=True, env=env_without_proxy())
    assert bad.returncode == 2
    assert "ietf-9" in bad.stderr  # the choices are listed
