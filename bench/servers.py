"""Servers and clients the benchmarks drive: haul (uvicorn or granian), the official Node tus
server, curl as a neutral uploader, and the raw write speed of a directory."""

from __future__ import annotations

import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.helpers import JS_DIR, HaulServer, free_port, wait_for_port  # noqa: E402

TUS = {"Tus-Resumable": "1.0.0"}


@dataclass
class Running:
    name: str
    endpoint: str
    pid: int


@contextmanager
def haul_server(data_dir: Path, *extra: str) -> Iterator[Running]:
    server = HaulServer(data_dir=data_dir, extra=["--sweep-interval", "0", *extra]).start()
    assert server.proc is not None
    try:
        yield Running("haul", server.endpoint, server.proc.pid)
    finally:
        server.stop()


@contextmanager
def haul_granian(
    data_dir: Path, *, tls: tuple[Path, Path, Path] | None = None, verify_digest: bool = True
) -> Iterator[Running]:
    """The same application under granian (embedded, single process), for the server choice;
    with ``tls`` (certificate chain, key, CA file) it serves HTTPS with HTTP/2 and HTTP/1.1."""
    port = free_port()
    scheme, tls_args = "http", ""
    if tls is not None:
        scheme = "https"
        tls_args = f", ssl_cert=Path({str(tls[0])!r}), ssl_key=Path({str(tls[1])!r})"
    code = (
        "import asyncio\n"
        "from pathlib import Path\n"
        "from granian.server.embed import Server\n"
        "from granian.constants import Interfaces\n"
        "from haul.config import load_settings\n"
        "from haul.compose import build_app as create_app\n"
        f"app = create_app(load_settings(overrides={{'data_dir': {str(data_dir)!r},"
        f" 'sweep_interval': '0', 'verify_digest': {verify_digest!r}}}))\n"
        f"asyncio.run(Server(app, address='127.0.0.1', port={port},"
        f" interface=Interfaces.ASGI, log_enabled=False{tls_args}).serve())\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        _wait_ready(f"{scheme}://127.0.0.1:{port}/healthz", verify=tls[2] if tls else None)
        yield Running("haul (granian)", f"{scheme}://127.0.0.1:{port}/files/", proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def node_server(data_dir: Path) -> Iterator[Running]:
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    command = ["node", str(JS_DIR / "tus_node_server.mjs"), str(port), str(data_dir)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        _wait_ready(f"http://127.0.0.1:{port}/files", method="OPTIONS")
        yield Running("@tus/server (Node)", f"http://127.0.0.1:{port}/files", proc.pid)
    finally:
        proc.kill()
        proc.wait()


@contextmanager
def bare_receiver(data_dir: Path) -> Iterator[Running]:
    """bench/bare_receiver.py: socket to file with nothing else, the floor of any Python server."""
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    script = ROOT / "bench" / "bare_receiver.py"
    proc = subprocess.Popen([sys.executable, str(script), str(port), str(data_dir)])
    try:
        if not wait_for_port(port, 30, proc):
            raise RuntimeError("the bare receiver did not start")
        yield Running("bare Python receiver", f"http://127.0.0.1:{port}/body", proc.pid)
    finally:
        proc.kill()
        proc.wait()


def _wait_ready(url: str, method: str = "GET", verify: Path | None = None) -> None:
    deadline = time.monotonic() + 30
    tls = ssl.create_default_context(cafile=verify) if verify else True
    while time.monotonic() < deadline:
        try:
            if httpx.request(method, url, timeout=1, verify=tls).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def create(endpoint: str, length: int, **headers: str) -> str:
    response = httpx.post(endpoint, headers={**TUS, "Upload-Length": str(length), **headers})
    assert response.status_code == 201, response.text
    return str(httpx.URL(endpoint).join(response.headers["location"]))


def curl_patch(url: str, source: Path | str, *headers: str) -> float:
    """PATCH the whole ``source`` (a file, or '-' for stdin) with curl; returns bytes/s."""
    command = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{speed_upload}",
               "-X", "PATCH", "-H", "Tus-Resumable: 1.0.0", "-H", "Upload-Offset: 0",
               "-H", "Content-Type: application/offset+octet-stream", "-H", "Expect:",
               *(x for h in headers for x in ("-H", h)), "-T", str(source), url]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    status, speed = out.split()
    assert status == "204", out
    return float(speed)


def ceiling(directory: Path, size: int) -> float:
    """dd-style raw write speed of ``directory``: 1 MiB writes, then fsync."""
    path = directory / f"ceiling-{os.getpid()}"
    command = ["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={size >> 20}", "conv=fsync"]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stderr
    path.unlink()
    match = re.search(r"copied, ([0-9.]+) s", out)
    assert match, out
    return size / float(match[1])


class RssSampler:
    """Peak resident memory of a process, sampled every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), self.process.memory_info().rss))
            time.sleep(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak(self) -> int:
        return max(rss for _, rss in self.samples)


def scratch(base: str) -> Path:
    return Path(tempfile.mkdtemp(prefix="haul-bench-", dir=base))


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
