"""Shared test helpers: a real `haul serve` process, free ports, files and digests."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

HAUL = str(Path(sys.executable).parent / "haul")
JS_DIR = Path(__file__).parent / "js"
TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = "application/offset+octet-stream"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate for 127.0.0.1 from it, written into ``directory``:
    (certificate chain, private key, CA certificate)."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    chain, key, ca_file = directory / "chain.pem", directory / "key.pem", directory / "ca.pem"
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    return chain, key, ca_file


def wait_for_port(
    port: int, timeout: float, process: subprocess.Popen[bytes] | None = None
) -> bool:
    """Whether 127.0.0.1:``port`` accepts connections within ``timeout`` seconds (False at
    once if ``process`` exits first)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            if time.monotonic() > deadline or (process is not None and process.poll() is not None):
                return False
            time.sleep(0.05)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def random_file(path: Path, size: int, seed: int = 0) -> Path:
    """Pseudo-random (incompressible, reproducible) content, written in blocks."""
    rng = __import__("random").Random(seed)
    with open(path, "wb") as handle:
        remaining = size
        while remaining:
            block = min(remaining, 1 << 20)
            handle.write(rng.randbytes(block))
            remaining -= block
    return path


@dataclass
class HaulServer:
    data_dir: Path
    port: int = field(default_factory=free_port)
    extra: list[str] = field(default_factory=list)
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    ca_file: Path | None = None  # set when the server speaks TLS: the CA that signed its cert

    @property
    def url(self) -> str:
        scheme = "https" if self.ca_file else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"{self.url}/files/"

    def start(self, timeout: float = 20.0) -> HaulServer:
        log_path = self.log_path or self.data_dir.parent / f"haul-{self.port}.log"
        self.log_path = log_path
        log = open(log_path, "ab")  # noqa: SIM115 - handed to the child process
        cmd = [HAUL, "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--data-dir", str(self.data_dir), *self.extra]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"haul serve exited: {log_path.read_text()[-2000:]}")
            try:
                health = httpx.get(f"{self.url}/healthz", timeout=1, verify=self.tls_context())
                if health.status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"haul serve did not start: {log_path.read_text()[-2000:]}")

    def tls_context(self) -> ssl.SSLContext | bool:
        return ssl.create_default_context(cafile=self.ca_file) if self.ca_file else True

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> HaulServer:
        self.kill()
        return self.start()

    def rss(self) -> int:
        import psutil

        assert self.proc is not None
        return int(psutil.Process(self.proc.pid).memory_info().rss)

    def upload_path(self, url: str) -> Path:
        return self.data_dir / "uploads" / url.rstrip("/").rsplit("/", 1)[-1]


def create(client: httpx.Client, server: HaulServer, length: int | None, **headers: str) -> str:
    hdrs = {**TUS, **headers}
    if length is not None:
        hdrs["Upload-Length"] = str(length)
    response = client.post(server.endpoint, headers=hdrs)
    assert response.status_code == 201, response.text
    return response.headers["location"]


def patch(
    client: httpx.Client, url: str, offset: int, data: bytes, **headers: str
) -> httpx.Response:
    hdrs = {**TUS, "Upload-Offset": str(offset), "Content-Type": OCTETS, **headers}
    return client.patch(url, content=data, headers=hdrs)


def head(client: httpx.Client, url: str) -> httpx.Response:
    return client.head(url, headers=TUS)


def env_without_proxy() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


class RawRequest:
    """An HTTP/1.1 request written by hand over a socket, so a test can stop mid-body, stall,
    or vanish the way real networks do."""

    def __init__(self, server: HaulServer, method: str, url: str, headers: dict[str, str]) -> None:
        path = "/" + url.split("/", 3)[3] if url.startswith("http") else url
        self.sock = socket.create_connection(("127.0.0.1", server.port))
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{server.port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def status(self, timeout: float = 30) -> int:
        self.sock.settimeout(timeout)
        data = b""
        while b"\r\n" not in data:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            data += chunk
        return int(data.split(b" ", 2)[1])

    def close(self) -> None:
        self.sock.close()


def raw_patch(server: HaulServer, url: str, offset: int, length: int, **extra: str) -> RawRequest:
    headers = {**TUS, "Upload-Offset": str(offset), "Content-Type": OCTETS,
               "Content-Length": str(length), **extra}  # fmt: skip
    return RawRequest(server, "PATCH", url, headers)


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(interval)


def wait_until_still(read: Callable[[], int], still_for: float, timeout: float) -> int:
    """Waits until ``read()`` has not changed for ``still_for`` seconds; returns that value.

    Bytes a client sent before it stopped may sit in socket buffers for a while: this tells
    "drained" from "still sending" (which never goes still, so the wait fails)."""
    deadline = time.monotonic() + timeout
    value, since = read(), time.monotonic()
    while time.monotonic() - since < still_for:
        if time.monotonic() > deadline:
            raise AssertionError(f"still changing after {timeout} s")
        time.sleep(0.05)
        if (now := read()) != value:
            value, since = now, time.monotonic()
    return value
