"""The client library and the `haul upload|download|status|rm|ls` CLI, against real servers,
through a proxy that counts, throttles, stalls and cuts connections."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import haul
from tests.helpers import HAUL, JS_DIR, TUS, env_without_proxy, free_port, random_file, sha256_file
from tests.proxy import ChaosProxy

MiB = 1 << 20


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def proxy_for() -> Iterator[object]:
    proxies: list[ChaosProxy] = []

    def make(server, **options) -> ChaosProxy:  # type: ignore[no-untyped-def]
        proxy = ChaosProxy(server.port, **options).start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()


def _cli(state_dir: Path, *args: str, **popen: object) -> subprocess.Popen[str]:
    env = {**env_without_proxy(), "HAUL_STATE_DIR": str(state_dir)}
    return subprocess.Popen([HAUL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, **popen)  # type: ignore[call-overload]  # fmt: skip


def _run_cli(state_dir: Path, *args: str, timeout: float = 300) -> tuple[int, list[dict], str]:
    proc = _cli(state_dir, *args)
    out, err = proc.communicate(timeout=timeout)
    results = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return proc.returncode, results, err


def _server_digest(url: str) -> str:
    digest = hashlib.sha256()
    with httpx.Client(timeout=60, trust_env=False) as client, client.stream("GET", url) as r:
        assert r.status_code == 200
        for block in r.iter_bytes(MiB):
            digest.update(block)
    return digest.hexdigest()


def _wait_upstream(proxy: ChaosProxy, at_least: int, proc=None, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while proxy.upstream_bytes < at_least:
        assert time.monotonic() < deadline, "upload did not progress"
        if proc is not None:
            assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)


def _interrupt(state_dir: Path, proxy: ChaosProxy, args: tuple[str, ...], at_least: int,
               sig: int = signal.SIGKILL) -> subprocess.Popen[str]:  # fmt: skip
    """Start `haul ...args`, and send it ``sig`` once ``at_least`` bytes reached the server."""
    proc = _cli(state_dir, *args)
    _wait_upstream(proxy, at_least, proc)
    proc.send_signal(sig)
    return proc


# -- the library ----------------------------------------------------------------------------


@pytest.mark.parametrize("parallel", [1, 4])
def test_library_upload_with_progress(server, tmp_path, state_dir, parallel) -> None:
    source = random_file(tmp_path / "data.bin", 40 * MiB + 3, seed=1)
    seen: list[int] = []
    hashed: list[int] = []
    client = haul.Client(server.url, state_dir=state_dir, parallel=parallel, chunk_size=8 * MiB)

    def progress(p: haul.Progress) -> None:
        (hashed if p.phase == "hashing" else seen).append(p.sent)

    result = client.upload(source, metadata={"project": "x"}, on_progress=progress)
    assert result.size == source.stat().st_size
    assert result.sha256 == sha256_file(source)  # computed while reading
    assert result.parallel == parallel
    assert _server_digest(result.url) == result.sha256
    assert seen[-1] == result.size
    assert seen == sorted(seen) or parallel > 1
    assert hashed == []  # no hashing pass before the first byte: the hash runs alongside
    assert result.instant is False
    status = client.status(result.url)
    assert status.complete
    assert status.metadata["filename"] == "data.bin"
    assert status.metadata["project"] == "x"
    assert list((state_dir / "uploads").glob("*.json")) == []  # finished entries are removed
    client.delete(result.url)
    with pytest.raises(haul.HaulClientError):
        client.status(result.url)


async def test_async_client(server, tmp_path, state_dir) -> None:
    source = random_file(tmp_path / "a.bin", 3 * MiB, seed=2)
    async with haul.AsyncClient(server.url, state_dir=state_dir) as client:
        result = await client.upload(source)
        target = await client.download(result.url, tmp_path / "back.bin")
    assert sha256_file(target) == sha256_file(source)


@pytest.mark.parametrize("size", [0, 1])
def test_tiny_files(server, tmp_path, state_dir, size: int) -> None:
    source = tmp_path / f"tiny{size}"
    source.write_bytes(b"x" * size)
    result = haul.Client(server.url, state_dir=state_dir).upload(source)
    assert result.size == size
    assert _server_digest(result.url) == hashlib.sha256(b"x" * size).hexdigest()


def test_rejection_stops_at_once_with_the_servers_message(make_server, tmp_path, state_dir) -> None:
    server = make_server("--max-metadata-size", "100", "--access-log")
    source = random_file(tmp_path / "f.bin", 10, seed=3)
    client = haul.Client(server.url, state_dir=state_dir, retries=50)
    with pytest.raises(haul.ServerRejected) as caught:
        client.upload(source, metadata={"note": "n" * 200})
    assert caught.value.status == 400
    assert caught.value.code == "ERR_INVALID_METADATA"
    assert "100 bytes" in caught.value.message
    assert server.log_path is not None
    log_path = server.log_path
    # Access lines are written as each answer goes out: one more request, once its own line is
    # there, has the lines of every request answered before it.
    httpx.get(f"{server.url}/healthz", trust_env=False)
    deadline = time.monotonic() + 30
    while "haul.access: GET /healthz" not in log_path.read_text():
        assert time.monotonic() < deadline, "no access line for the last request"
        time.sleep(0.05)
    lines = log_path.read_text().splitlines()
    creations = [line for line in lines if "haul.access: POST /files/" in line]
    assert len(creations) == 1, creations  # asked once: a 400 is not retried


def test_client_honours_tus_max_size(make_server, tmp_path, state_dir) -> None:
    server = make_server("--max-size", "1KiB")
    source = random_file(tmp_path / "f.bin", 2048, seed=4)
    with pytest.raises(haul.client.NotSupported, match="at most 1024"):
        haul.Client(server.url, state_dir=state_dir).upload(source)


# -- resume ----------------------------------------------------------------------------------


@pytest.mark.parametrize("parallel", ["1", "4"])
def test_sigkill_cli_then_rerun_sends_only_the_rest(
    server, proxy_for, tmp_path, state_dir, parallel
) -> None:
    size = 48 * MiB
    source = random_file(tmp_path / "big.bin", size, seed=5)
    proxy = proxy_for(server, rate=16 * MiB)
    args = ("upload", str(source), "--server", proxy.url, "--parallel", parallel,
            "--chunk-size", "4MiB", "--json")  # fmt: skip
    _interrupt(state_dir, proxy, args, size // 2).wait()
    before = proxy.upstream_bytes
    proxy.rate = None
    code, results, err = _run_cli(state_dir, *args)
    assert code == 0, err
    (result,) = results
    assert result["resumed"] is True
    resent = proxy.upstream_bytes - before
    # The rest, plus at most the chunks that were in flight when the client died.
    assert resent <= size - before + int(parallel) * 4 * MiB + MiB, (resent, before)
    assert resent < size * 0.75
    assert _server_digest(result["url"]) == sha256_file(source)
    assert result["sha256"] == sha256_file(source)


def test_ctrl_c_exits_130_and_the_same_command_resumes(
    server, proxy_for, tmp_path, state_dir
) -> None:
    source = random_file(tmp_path / "big.bin", 32 * MiB, seed=14)
    proxy = proxy_for(server, rate=8 * MiB)
    args = ("upload", str(source), "--server", proxy.url, "--chunk-size", "2MiB", "--json")
    first = _interrupt(state_dir, proxy, args, 8 * MiB, signal.SIGINT)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 130
    assert "run the same command again to resume" in err
    proxy.rate = None
    code, (result,), err = _run_cli(state_dir, *args)
    assert code == 0, err
    assert result["resumed"] is True
    assert _server_digest(result["url"]) == sha256_file(source)


def test_modified_file_starts_a_fresh_upload(server, proxy_for, tmp_path, state_dir) -> None:
    source = random_file(tmp_path / "doc.bin", 24 * MiB, seed=6)
    proxy = proxy_for(server, rate=8 * MiB)
    args = ("upload", str(source), "--server", proxy.url, "--chunk-size", "2MiB", "--json")
    _interrupt(state_dir, proxy, args, 8 * MiB).wait()
    with open(source, "r+b") as handle:  # same size, new content in the middle
        handle.seek(12 * MiB)
        handle.write(os.urandom(MiB))
    proxy.rate = None
    code, (result,), err = _run_cli(state_dir, *args)
    assert code == 0, err
    assert result["resumed"] is False
    assert _server_digest(result["url"]) == sha256_file(source)


def test_server_killed_and_restarted_mid_upload(
    make_server, proxy_for, tmp_path, state_dir
) -> None:
    server = make_server()
    source = random_file(tmp_path / "big.bin", 40 * MiB, seed=7)
    proxy = proxy_for(server, rate=16 * MiB)
    proc = _cli(state_dir, "upload", str(source), "--server", proxy.url, "--json",
                "--chunk-size", "4MiB")  # fmt: skip
    _wait_upstream(proxy, 12 * MiB, proc)
    server.kill()
    time.sleep(1)
    assert proc.poll() is None  # still trying
    server.start()
    proxy.rate = None
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    result = json.loads(out.splitlines()[-1])
    assert _server_digest(result["url"]) == sha256_file(source)


def test_random_connection_cuts(server, proxy_for, tmp_path, state_dir) -> None:
    source = random_file(tmp_path / "big.bin", 32 * MiB, seed=8)
    proxy = proxy_for(server, seed=8)
    proxy.cut_probability = 0.01  # about one cut every 6 MiB of 64 KiB pieces
    client = haul.Client(proxy.url, state_dir=state_dir, chunk_size=4 * MiB, retries=50)
    result = client.upload(source)
    assert proxy.cuts > 0
    assert _server_digest(result.url.replace(str(proxy.port), str(server.port))) == sha256_file(
        source
    )


def test_a_lost_answer_to_the_final_request_is_retried(
    server, proxy_for, tmp_path, state_dir
) -> None:
    source = random_file(tmp_path / "big.bin", 24 * MiB, seed=10)
    proxy = proxy_for(server)
    proxy.lose_answer_to = b"Upload-Concat: final;"
    client = haul.Client(proxy.url, state_dir=state_dir, chunk_size=4 * MiB, parallel=2)
    result = client.upload(source)
    assert proxy.answers_lost == 1
    assert proxy.upstream_bytes < source.stat().st_size + MiB  # nothing was sent twice
    assert server.log_path.read_text().count("created final upload") == 1
    assert _server_digest(result.url.replace(str(proxy.port), str(server.port))) == sha256_file(
        source
    )


@pytest.mark.parametrize(
    ("size", "request_line", "created"),
    [
        (24 * MiB, b"Upload-Concat: partial", 1 + 6),  # the instant-upload probe + 6 partials
        (0, b"Upload-Length: 0", 1),  # complete at creation: a second one would never go
    ],
)
def test_a_lost_answer_to_a_creation_makes_no_second_upload(
    server, proxy_for, tmp_path, state_dir, size: int, request_line: bytes, created: int
) -> None:
    source = random_file(tmp_path / "file.bin", size, seed=11)
    proxy = proxy_for(server)
    proxy.lose_answer_to = request_line
    client = haul.Client(proxy.url, state_dir=state_dir, chunk_size=4 * MiB, parallel=2)
    result = client.upload(source)
    assert proxy.answers_lost == 1
    log = server.log_path.read_text()
    assert log.count("its creation was repeated") == 1  # the retry carried the same key
    assert len(re.findall(r"created upload \w+ length=", log)) == created
    assert _server_digest(result.url.replace(str(proxy.port), str(server.port))) == sha256_file(
        source
    )


def test_stalled_connection_is_detected_by_timeout(
    make_server, proxy_for, tmp_path, state_dir
) -> None:
    """A connection that stalls for good mid-request (no byte, answer, close or reset ever
    comes back): the client must drop it after --timeout and resume on a new one. (The server
    holds the upload until its own body timeout, kept short here, ends the stalled request.)"""
    server = make_server("--body-timeout", "4")
    source = random_file(tmp_path / "big.bin", 16 * MiB, seed=9)
    proxy = proxy_for(server, rate=8 * MiB)
    proc = _cli(state_dir, "upload", str(source), "--server", proxy.url, "--json",
                "--timeout", "2", "--chunk-size", "4MiB", "--parallel", "1")  # fmt: skip
    try:
        _wait_upstream(proxy, 6 * MiB, proc)  # in the middle of the second chunk
        stalled = proxy.stall_busy()
        while not stalled:  # between two requests: stall the next one
            assert proc.poll() is None, proc.communicate()
            stalled = proxy.stall_busy()
        sent_before = proxy.upstream_bytes
        carried = {id(link): link.upstream_bytes for link in proxy.links}
        proxy.rate = None
        # Only the client can end a stalled connection; one without a timeout never does.
        assert all(link.closed_event.wait(60) for link in stalled), "the stall was never noticed"
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    result = json.loads(out.splitlines()[-1])
    assert _server_digest(result["url"].replace(str(proxy.port), str(server.port))) == sha256_file(
        source
    )
    # It resumed on other connections (new ones, or one kept alive from the instant-upload
    # check), which carried after the stall (at least) every byte the server could not have
    # received before it.
    assert all(link.client_closed is not None for link in stalled)
    others = [link for link in proxy.links if all(link is not s for s in stalled)]
    after = sum(link.upstream_bytes - carried.get(id(link), 0) for link in others)
    assert after >= source.stat().st_size - sent_before


# -- the CLI ---------------------------------------------------------------------------------


def test_directory_of_200_files(server, tmp_path, state_dir) -> None:
    root = tmp_path / "tree"
    for i in range(200):
        folder = root / f"d{i % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i}.txt").write_bytes(os.urandom(i * 37))
    code, results, err = _run_cli(state_dir, "upload", str(root), "--server", server.url, "--json")
    assert code == 0, err
    assert len(results) == 200
    with httpx.Client(trust_env=False) as client:
        for result in results:
            assert result["ok"]
            path = Path(result["path"])
            assert client.get(result["url"]).content == path.read_bytes()
            meta = client.head(result["url"], headers=TUS).headers["upload-metadata"]
            name = dict(p.split(" ") for p in meta.split(","))["filename"]
            import base64

            assert base64.b64decode(name).decode() == str(path.relative_to(tmp_path))


def test_cli_metadata_option(server, tmp_path, state_dir) -> None:
    source = tmp_path / "notes.txt"
    source.write_text("hello")
    args = ("upload", str(source), "--server", server.url, "--json",
            "-m", "project=apollo", "-m", "owner=ops")  # fmt: skip
    code, (result,), err = _run_cli(state_dir, *args)
    assert code == 0, err
    status = haul.Client(server.url, state_dir=state_dir).status(result["url"])
    assert status.metadata == {"filename": "notes.txt", "filetype": "text/plain",
                               "project": "apollo", "owner": "ops"}  # fmt: skip
    code, _, err = _run_cli(state_dir, "upload", str(source), "--server", server.url, "-m", "x")
    assert code == 2
    assert "KEY=VALUE" in err


def test_exit_codes(make_server, tmp_path, state_dir) -> None:
    server = make_server("--max-size", "100")
    small = tmp_path / "small.txt"
    small.write_bytes(b"ok")
    big = random_file(tmp_path / "big.bin", 1000)
    code, results, _ = _run_cli(
        state_dir, "upload", str(small), str(big), "--server", server.url, "--json"
    )
    assert code == 1  # partial failure
    assert [r["ok"] for r in results] == [True, False]
    assert "100" in results[1]["error"]
    code, _, err = _run_cli(
        state_dir, "upload", str(small), "--server", server.url, "--parallel", "0"
    )
    assert code == 2
    assert "--parallel" in err
    code, _, err = _run_cli(state_dir, "upload", str(tmp_path / "missing"), "--server", server.url)
    assert code == 2
    assert "does not exist" in err


def test_download_status_rm_ls(server, proxy_for, tmp_path, state_dir) -> None:
    source = random_file(tmp_path / "report.pdf", 20 * MiB, seed=10)
    url = haul.Client(server.url, state_dir=state_dir).upload(source).url
    proxy = proxy_for(server, rate=8 * MiB)
    via_proxy = url.replace(str(server.port), str(proxy.port))
    target = tmp_path / "out.pdf"
    first = _cli(state_dir, "download", via_proxy, "-o", str(target))
    deadline = time.monotonic() + 30
    part = target.with_name("out.pdf.part")
    while not (part.exists() and part.stat().st_size > 4 * MiB):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()
    have = part.stat().st_size
    proxy.rate = None
    code, _, err = _run_cli(state_dir, "download", via_proxy, "-o", str(target))
    assert code == 0, err
    assert sha256_file(target) == sha256_file(source)
    assert not part.exists()
    assert have > 0

    status = json.loads(_cli(state_dir, "status", url).communicate()[0])
    assert status["complete"] is True
    assert status["metadata"]["filename"] == "report.pdf"

    # `ls` shows an unfinished upload this machine started.
    slow = proxy_for(server, rate=4 * MiB)
    pending = _cli(state_dir, "upload", str(source), "--server", slow.url, "--no-resume",
                   "--no-dedup",
                   "--parallel", "1", "--chunk-size", "2MiB")  # fmt: skip
    _wait_upstream(slow, 3 * MiB, pending)
    pending.send_signal(signal.SIGKILL)
    pending.wait()
    listing = json.loads(_cli(state_dir, "ls", "--json").communicate()[0])
    assert len(listing) == 1
    assert listing[0]["path"] == str(source)
    assert 0 < listing[0]["sent"] < source.stat().st_size

    proc = _cli(state_dir, "rm", url)
    assert proc.wait() == 0
    assert httpx.head(url, headers=TUS).status_code == 410


# -- another tus server ----------------------------------------------------------------------


@pytest.fixture
def node_tus_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port, store = free_port(), tmp_path / "node-store"
    store.mkdir()
    proc = subprocess.Popen(["node", str(JS_DIR / "tus_node_server.mjs"), str(port), str(store)],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    yield f"http://127.0.0.1:{port}/files", store
    proc.kill()
    proc.wait()


def test_against_the_official_node_server(node_tus_server, tmp_path, state_dir) -> None:
    endpoint, store = node_tus_server
    source = random_file(tmp_path / "n.bin", 30 * MiB + 11, seed=12)
    result = haul.Client(endpoint, state_dir=state_dir, chunk_size=8 * MiB).upload(source)
    assert result.parallel == 1  # no concatenation there: one sequential upload
    stored = store / result.url.rsplit("/", 1)[1]
    assert sha256_file(stored) == sha256_file(source)


def test_resume_against_the_official_node_server(node_tus_server, tmp_path, state_dir) -> None:
    endpoint, store = node_tus_server
    source = random_file(tmp_path / "n.bin", 24 * MiB, seed=13)
    port = int(endpoint.split(":")[2].split("/")[0])
    proxy = ChaosProxy(port, rate=8 * MiB).start()
    try:
        args = ("upload", str(source), "--server", f"{proxy.url}/files", "--json",
                "--chunk-size", "2MiB")  # fmt: skip
        _interrupt(state_dir, proxy, args, 8 * MiB).wait()
        before = proxy.upstream_bytes
        proxy.rate = None
        code, (result,), err = _run_cli(state_dir, *args)
        assert code == 0, err
        assert result["resumed"] is True
        assert proxy.upstream_bytes - before < 24 * MiB * 0.8
    finally:
        proxy.stop()
    assert sha256_file(store / result["url"].rsplit("/", 1)[1]) == sha256_file(source)
