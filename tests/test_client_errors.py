"""How the client fails and retries, against real `haul serve` processes: through an HTTP proxy
that answers chosen requests with an error of its own (as an overloaded server or a gateway
would) and records every request, against a port where nothing listens, and from the CLI."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpx
import pytest

import haul
from haul.client import NotSupported, RetriesExhausted, ServerRejected, UploadGone
from tests.helpers import HAUL, HaulServer, env_without_proxy, free_port, random_file, sha256_file

MiB = 1 << 20
SERVER_MODULES = ("haul.core", "haul.http", "haul.storage", "haul.records", "haul.locks",
                  "haul.transport", "haul.compose", "haul.config", "haul.errors", "starlette",
                  "uvicorn", "aiobotocore", "asyncpg")  # fmt: skip


@dataclass
class Fault:
    """Answer the next ``times`` requests of ``method`` (whose path contains ``path``) with
    ``status``; with ``forward`` the server gets the request first and its answer is lost."""

    method: str
    status: int
    times: int = 1
    path: str = ""
    forward: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body_size: int
    status: int  # what the client was answered
    at: float  # time.monotonic() when the request had arrived


class FaultProxy:
    """An HTTP/1.1 reverse proxy to 127.0.0.1:<target_port>, one request per connection, that
    injects ``faults`` and records every request in ``seen``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.faults: list[Fault] = []
        self.seen: list[Seen] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def start(self) -> FaultProxy:
        self._thread.start()

        async def listen() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

        self._call(listen())
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()

        self._call(close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def requests(self, method: str, path: str = "") -> list[Seen]:
        return [s for s in self.seen if s.method == method and path in s.path]

    def _take(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.times > 0 and fault.method == method and fault.path in path:
                fault.times -= 1
                return fault
        return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        arrived = time.monotonic()
        first, *lines = head.decode("latin-1").split("\r\n")
        method, path, _ = first.split(" ", 2)
        headers: dict[str, str] = {}
        kept = [first]
        for line in filter(None, lines):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
            if name.strip().lower() != "connection":
                kept.append(line)
        assert "transfer-encoding" not in headers, "the proxy reads bodies by Content-Length"
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        fault = self._take(method, path)
        if fault is None or fault.forward:
            answer = await self._forward(kept, body)
        if fault is not None:
            answer = _answer(fault, method)
        status = int(answer.split(b" ", 2)[1])
        self.seen.append(Seen(method, path, headers, len(body), status, arrived))
        writer.write(answer)
        await writer.drain()
        writer.close()

    async def _forward(self, head: list[str], body: bytes) -> bytes:
        upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        upstream_w.write("\r\n".join([*head, "Connection: close", "", ""]).encode("latin-1"))
        upstream_w.write(body)
        await upstream_w.drain()
        answer = await upstream_r.read()  # to the end: the server closes after one answer
        upstream_w.close()
        return answer


def _answer(fault: Fault, method: str) -> bytes:
    body = fault.body.encode()
    lines = [f"HTTP/1.1 {fault.status} {HTTPStatus(fault.status).phrase}",
             f"Content-Length: {len(body)}", "Content-Type: text/plain", "Connection: close",
             "Tus-Resumable: 1.0.0", *(f"{k}: {v}" for k, v in fault.headers.items())]  # fmt: skip
    return "\r\n".join([*lines, "", ""]).encode() + (b"" if method == "HEAD" else body)


@pytest.fixture
def proxy_for() -> Iterator[Callable[[HaulServer], FaultProxy]]:
    proxies: list[FaultProxy] = []

    def make(server: HaulServer) -> FaultProxy:
        proxy = FaultProxy(server.port).start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


def _uploaded(server: HaulServer, tmp_path: Path, state_dir: Path, size: int = 10) -> str:
    source = random_file(tmp_path / f"f{size}.bin", size, seed=size)
    return haul.Client(server.url, state_dir=state_dir).upload(source).url


def _via(proxy: FaultProxy, server: HaulServer, url: str) -> str:
    return url.replace(server.url, proxy.url)


def _cli(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**env_without_proxy(), "HAUL_STATE_DIR": str(state_dir)}
    return subprocess.run([HAUL, *args], capture_output=True, text=True, env=env, timeout=120)


# -- transient failures: retried, then it succeeds ---------------------------------------------


def test_a_503_with_retry_after_is_retried_after_the_servers_delay(
    server, proxy_for, tmp_path, state_dir
) -> None:
    url = _uploaded(server, tmp_path, state_dir)
    proxy = proxy_for(server)
    busy = "ERR_UNAVAILABLE: the store is busy\n"
    proxy.faults.append(Fault("HEAD", 503, times=2, headers={"Retry-After": "1"}, body=busy))
    status = haul.Client(proxy.url, state_dir=state_dir, retries=5).status(_via(proxy, server, url))
    assert status.complete
    heads = proxy.requests("HEAD")
    assert [h.status for h in heads] == [503, 503, 200]
    # Backoff alone waits at most 0.5 s after the first failure: these waits are the server's.
    assert all(b.at - a.at >= 1.0 for a, b in itertools.pairwise(heads))


def test_an_upload_retries_its_creation_with_the_same_idempotency_key(
    server, proxy_for, tmp_path, state_dir
) -> None:
    source = random_file(tmp_path / "f.bin", 100_000, seed=1)
    proxy = proxy_for(server)
    proxy.faults.append(Fault("POST", 500, body="ERR_INTERNAL: the server failed\n"))
    result = haul.Client(proxy.url, state_dir=state_dir).upload(source, dedup=False)
    posts = proxy.requests("POST")
    assert [p.status for p in posts] == [500, 201]
    assert posts[0].headers["idempotency-key"] == posts[1].headers["idempotency-key"]
    assert result.sha256 == sha256_file(source)


@pytest.mark.parametrize(("forward", "resent"), [(False, True), (True, False)])
def test_a_failed_patch_is_followed_by_a_head_and_sends_from_the_servers_offset(
    server, proxy_for, tmp_path, state_dir, forward: bool, resent: bool
) -> None:
    """The server either never got the PATCH or stored it and its answer was lost: either way
    the client asks for the offset and sends only what the server does not hold."""
    source = random_file(tmp_path / "f.bin", 3 * MiB, seed=2)
    proxy = proxy_for(server)
    proxy.faults.append(Fault("PATCH", 503, forward=forward, body="ERR_UNAVAILABLE: busy\n"))
    client = haul.Client(proxy.url, state_dir=state_dir, chunk_size=MiB, parallel=1)
    result = client.upload(source, dedup=False)
    after_create = [s for s in proxy.seen if s.method in ("PATCH", "HEAD")]
    assert [(s.method, s.status) for s in after_create[:3]] == [
        ("PATCH", 503), ("HEAD", 200), ("PATCH", 204),
    ]  # fmt: skip
    offsets = [int(s.headers["upload-offset"]) for s in proxy.requests("PATCH")]
    assert offsets == ([0, 0, MiB, 2 * MiB] if resent else [0, MiB, 2 * MiB])
    sent = sum(s.body_size for s in proxy.requests("PATCH"))
    assert sent == source.stat().st_size + (MiB if resent else 0)
    assert result.sha256 == sha256_file(source)
    assert httpx.get(result.url.replace(proxy.url, server.url)).content == source.read_bytes()


# -- failures that last: one HaulClientError, with the server's words --------------------------


def test_a_503_that_lasts_ends_after_the_attempts_with_the_servers_message(
    server, proxy_for, tmp_path, state_dir
) -> None:
    url = _uploaded(server, tmp_path, state_dir)
    proxy = proxy_for(server)
    busy = "ERR_UNAVAILABLE: the store is busy\n"
    proxy.faults.append(Fault("HEAD", 503, times=100, headers={"Retry-After": "0"}, body=busy))
    client = haul.Client(proxy.url, state_dir=state_dir, retries=3)
    with pytest.raises(RetriesExhausted, match="failed 3 times") as caught:
        client.status(_via(proxy, server, url))
    assert len(proxy.requests("HEAD")) == 3
    assert "HTTP 503" in str(caught.value)


def test_a_refusal_is_not_retried_and_carries_the_servers_code_and_message(
    make_server, proxy_for, tmp_path, state_dir
) -> None:
    server = make_server("--max-metadata-size", "100")
    proxy = proxy_for(server)
    source = random_file(tmp_path / "f.bin", 10, seed=3)
    client = haul.Client(proxy.url, state_dir=state_dir, retries=50)
    with pytest.raises(ServerRejected) as caught:
        client.upload(source, metadata={"note": "n" * 200})
    assert caught.value.status == 400
    assert caught.value.code == "ERR_INVALID_METADATA"
    assert "100 bytes" in caught.value.message
    assert [p.status for p in proxy.requests("POST")] == [400]  # once: no retry


def test_status_and_delete_of_a_missing_upload(server, proxy_for, tmp_path, state_dir) -> None:
    proxy = proxy_for(server)
    client = haul.Client(proxy.url, state_dir=state_dir, retries=10)
    missing = f"{proxy.url}/files/0123456789abcdef"
    with pytest.raises(UploadGone) as status:
        client.status(missing)
    # A HEAD answer has no body: the server's words come from the same refusal to a GET.
    assert (status.value.status, status.value.code) == (404, "ERR_UPLOAD_NOT_FOUND")
    assert "0123456789abcdef does not exist" in status.value.message
    with pytest.raises(UploadGone) as deletion:
        client.delete(missing)
    assert deletion.value.code == "ERR_UPLOAD_NOT_FOUND"
    assert "0123456789abcdef does not exist" in str(deletion.value)
    assert len(proxy.requests("HEAD")) == len(proxy.requests("DELETE")) == 1  # no retry

    url = _via(proxy, server, _uploaded(server, tmp_path, state_dir))
    client.delete(url)
    with pytest.raises(UploadGone) as gone:
        client.status(url)
    assert (gone.value.status, gone.value.code) == (410, "ERR_UPLOAD_GONE")
    assert "was terminated" in gone.value.message


def test_download_of_a_missing_upload(server, tmp_path, state_dir) -> None:
    client = haul.Client(server.url, state_dir=state_dir, retries=10)
    with pytest.raises(UploadGone, match="does not exist"):
        client.download(f"{server.endpoint}0123456789abcdef", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_server_that_is_down(tmp_path, state_dir) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    source = random_file(tmp_path / "f.bin", 10, seed=4)
    client = haul.Client(down, state_dir=state_dir, retries=3, max_backoff=0.1)
    for call in (
        lambda: client.upload(source),
        lambda: client.status(f"{down}/files/x"),
        lambda: client.delete(f"{down}/files/x"),
        lambda: client.download(f"{down}/files/x", tmp_path / "out"),
    ):
        with pytest.raises(RetriesExhausted, match="failed 3 times: ConnectError"):
            call()


def test_a_malformed_answer_is_a_client_error(server, proxy_for, state_dir) -> None:
    proxy = proxy_for(server)
    client = haul.Client(proxy.url, state_dir=state_dir, retries=2)
    url = f"{proxy.url}/files/x"
    proxy.faults.append(Fault("HEAD", 200, headers={"Upload-Offset": "lots"}))
    with pytest.raises(haul.HaulClientError, match=r"(?i)upload-offset: 'lots', not a number"):
        client.status(url)
    # Metadata a tus server got wrong costs only the pair that cannot be read.
    odd = {"Upload-Offset": "3", "Upload-Length": "3", "Upload-Metadata": "filename YS50eHQ=,x !!"}
    proxy.faults.append(Fault("HEAD", 200, headers=odd))
    assert client.status(url).metadata == {"filename": "a.txt"}


def test_direct_upload_to_a_server_without_an_object_store(
    server, proxy_for, tmp_path, state_dir
) -> None:
    proxy = proxy_for(server)
    source = random_file(tmp_path / "f.bin", 10, seed=5)
    client = haul.Client(proxy.url, state_dir=state_dir, retries=10)
    with pytest.raises(NotSupported, match=r"--storage s3.*ERR_UPLOAD_NOT_FOUND"):
        client.upload_direct(source)
    assert len(proxy.requests("POST", "/s3/multipart")) == 1


def test_direct_upload_retries_the_servers_api_and_the_store(
    make_server, proxy_for, rgw: str, s3_bucket: str, tmp_path, state_dir
) -> None:
    from tests.test_s3_server import s3_options

    server = make_server(*s3_options(rgw, s3_bucket))
    proxy = proxy_for(server)
    busy = "ERR_UNAVAILABLE: busy\n"
    proxy.faults += [
        Fault("POST", 503, path="/s3/multipart", headers={"Retry-After": "0"}, body=busy),
        Fault("GET", 429, path="/s3/multipart/", headers={"Retry-After": "0"}, body=busy),
        Fault("POST", 502, path="/complete", headers={"Retry-After": "0"}),
    ]
    source = random_file(tmp_path / "f.bin", 9 * MiB, seed=6)
    client = haul.Client(proxy.url, state_dir=state_dir, chunk_size=8 * MiB)
    result = client.upload_direct(source)
    assert [p.status for p in proxy.requests("POST", "/s3/multipart")][:2] == [503, 200]
    assert [p.status for p in proxy.requests("POST", "/complete")][:1] == [502]
    assert sorted(g.status for g in proxy.requests("GET", "/s3/multipart/")) == [200, 200, 429]
    assert result.sha256 == sha256_file(source)
    url = result.url.replace(proxy.url, server.url)
    assert httpx.get(url, timeout=60).content == source.read_bytes()


# -- the CLI: the message, the documented exit code, never a traceback -------------------------


def test_cli_reports_failures_in_words(server, tmp_path, state_dir) -> None:
    missing = f"{server.endpoint}0123456789abcdef"
    for args in (("status", missing), ("rm", missing), ("download", missing, "-o",
                                                        str(tmp_path / "out"))):  # fmt: skip
        done = _cli(state_dir, *args)
        assert done.returncode == 1, done.stderr
        assert "ERR_UPLOAD_NOT_FOUND" in done.stderr
        assert "does not exist" in done.stderr
        assert "Traceback" not in done.stderr

    down = f"http://127.0.0.1:{free_port()}"
    source = random_file(tmp_path / "f.bin", 10, seed=7)
    done = _cli(state_dir, "upload", str(source), "--server", down, "--retries", "2", "--json")
    assert done.returncode == 1  # the file failed
    [line] = [json.loads(line) for line in done.stdout.splitlines()]
    assert line["ok"] is False
    assert "failed 2 times: ConnectError" in line["error"]
    assert "Traceback" not in done.stderr
    done = _cli(state_dir, "status", f"{down}/files/x", "--retries", "2")
    assert (done.returncode, "Traceback" in done.stderr) == (1, False)
    assert "failed 2 times" in done.stderr

    done = _cli(state_dir, "upload", str(source), "--server", "ftp://example.org")
    assert done.returncode == 2  # usage error
    assert "not an http(s) URL" in done.stderr
    assert "Traceback" not in done.stderr


# -- the client imports nothing of the server ---------------------------------------------------


def test_the_client_and_its_cli_import_nothing_of_the_server(tmp_path) -> None:
    probe = f"""
import sys
from click.testing import CliRunner
import haul.cli.client, haul.client
from haul.cli.main import main
result = CliRunner().invoke(main, ["upload", "--help"])
assert result.exit_code == 0 and "--server" in result.output, result.output
print("\\n".join(sorted(m for m in sys.modules if m.startswith({SERVER_MODULES!r}))))
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []
    # The control: the server's commands still load, on demand.
    served = subprocess.run([HAUL, "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert served.returncode == 0
    assert "--storage" in served.stdout
