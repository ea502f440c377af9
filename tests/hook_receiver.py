"""A hook receiver for the tests, run as its own process: it records every POST it receives
(one JSON line each, appended to a log file that outlives the process) and answers as told.

    python tests/hook_receiver.py PORT LOG [--delay SECONDS]

``POST /_control`` with JSON changes its answers from then on:
``{"fail": N}`` answers the next N events 500 (with ``"fail_types": [...]``, of those types);
``{"answers": {"pre-create": {...}}}`` answers
events of that type 200 with that JSON; ``{"delay": S}`` holds each event S seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

_state: dict[str, Any] = {"fail": 0, "fail_types": [], "answers": {}, "delay": 0.0}
_lock = threading.Lock()


class Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: haul reuses its connections
    log_path: Path

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the log file is the record."""

    def do_POST(self) -> None:
        start = time.time()
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/_control":
            with _lock:
                _state.update(json.loads(body))
            self._answer(200, b"{}")
            return
        kind = json.loads(body).get("type", "")
        with _lock, open(self.log_path.with_suffix(".arrivals"), "a") as arrivals:
            arrivals.write(json.dumps({"id": self.headers.get("Haul-Event-Id")}) + "\n")
        with _lock:
            failing = _state["fail"] > 0 and kind in (_state["fail_types"] or [kind])
            _state["fail"] -= 1 if failing else 0
            answer = _state["answers"].get(kind, {})
            delay = float(_state["delay"])
        time.sleep(delay)
        status = 500 if failing else 200
        line = {
            "id": self.headers.get("Haul-Event-Id"),
            "signature": self.headers.get("Haul-Signature"),
            "body": body.decode(),
            "status": status,
            "start": start,
            "end": time.time(),
        }
        with _lock, open(self.log_path, "a") as log:
            log.write(json.dumps(line) + "\n")
        self._answer(status, json.dumps(answer).encode() if status == 200 else b"failing")

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class HookReceiver:
    """The tests' handle on a receiver process: start it, take it down, read what it got."""

    def __init__(self, port: int, log: Path, delay: float = 0.0) -> None:
        self.port = port
        self.log = log
        self.delay = delay
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> HookReceiver:
        command = [sys.executable, __file__, str(self.port), str(self.log)]
        self.proc = subprocess.Popen([*command, "--delay", str(self.delay)])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                self.control()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the hook receiver did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def control(self, **state: object) -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/_control", data=json.dumps(state).encode()
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        opener.open(request, timeout=5).read()

    def records(self) -> list[dict[str, Any]]:
        """Every POST received, in the order answered, with its parsed event as "event"."""
        if not self.log.exists():
            return []
        lines = [json.loads(line) for line in self.log.read_text().splitlines() if line]
        return [{**line, "event": json.loads(line["body"])} for line in lines]

    def arrivals(self) -> list[str]:
        """The ids of the events received so far, answered or not (yet)."""
        path = self.log.with_suffix(".arrivals")
        lines = path.read_text().splitlines() if path.exists() else []
        return [json.loads(line)["id"] for line in lines if line]

    def delivered(self) -> list[dict[str, Any]]:
        """The events answered 200, in the order received."""
        return [r["event"] for r in self.records() if r["status"] == 200]


def main() -> None:
    port, log = int(sys.argv[1]), Path(sys.argv[2])
    if "--delay" in sys.argv:
        _state["delay"] = float(sys.argv[sys.argv.index("--delay") + 1])
    Receiver.log_path = log
    server = ThreadingHTTPServer(("127.0.0.1", port), Receiver)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
