"""What TLS costs: one large PATCH over plain HTTP/1.1, HTTPS HTTP/1.1 and HTTPS HTTP/2 (haul's
TLS gate, ALPN), and the same two under granian (haul's former HTTPS server) as a baseline;
same file, same machine, same run; curl as the client.

    .venv/bin/python bench/tls_throughput.py [--size 1GiB] [--dir /dev/shm] [--rounds 2]

Prints a markdown table (MB/s and the ratio to plain HTTP) and writes it under bench/results/.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from tests.helpers import OCTETS, TUS, HaulServer, tls_files

from bench.report import best_of_rounds, save, speed_table
from bench.servers import haul_granian
from haul.config import parse_size

BLOCK = 1 << 20


def upload(endpoint: str, ca_file: Path, source: Path, http2: bool) -> float:
    """curl sends the PATCH (nghttp2 for HTTP/2): a C client, so the server is what is timed."""
    size = source.stat().st_size
    tls = ssl.create_default_context(cafile=ca_file)
    with httpx.Client(verify=tls, timeout=60, trust_env=False) as client:
        created = client.post(endpoint, headers={**TUS, "Upload-Length": str(size)})
    url = created.headers["location"]
    command = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{speed_upload}",
               "--http2" if http2 else "--http1.1", "-X", "PATCH", url, "-T", str(source),
               "-H", "Tus-Resumable: 1.0.0", "-H", "Upload-Offset: 0",
               "-H", f"Content-Type: {OCTETS}", "--cacert", str(ca_file)]  # fmt: skip
    status, speed = subprocess.run(
        command, capture_output=True, text=True, check=True
    ).stdout.split()
    assert status == "204", status
    return float(speed)


@contextmanager
def haul(data_dir: Path, *extra: str, ca_file: Path | None = None) -> Iterator[str]:
    server = HaulServer(data_dir, extra=["--sweep-interval", "0", "--no-verify-digest", *extra],
                        ca_file=ca_file).start()  # fmt: skip
    try:
        yield server.endpoint
    finally:
        server.stop()


@contextmanager
def granian(data_dir: Path, tls: tuple[Path, Path, Path]) -> Iterator[str]:
    with haul_granian(data_dir, tls=tls, verify_digest=False) as running:
        yield running.endpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="1GiB")
    parser.add_argument("--dir", default="/dev/shm")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    size = parse_size(args.size) // BLOCK * BLOCK
    work = Path(tempfile.mkdtemp(prefix="haul-bench-", dir=args.dir))
    chain, key, ca_file = tls_files(work)
    tls = ["--tls-cert", str(chain), "--tls-key", str(key)]
    # name: (how to start it, its data dir, HTTP/2?)
    setups = {
        "plain HTTP/1.1": (lambda d: haul(d), work / "plain", False),
        "HTTPS HTTP/1.1": (lambda d: haul(d, *tls, ca_file=ca_file), work / "tls1", False),
        "HTTPS HTTP/2": (lambda d: haul(d, *tls, ca_file=ca_file), work / "tls2", True),
        # The server haul used for HTTPS before its own TLS gate, as a baseline.
        "HTTPS HTTP/1.1, granian": (lambda d: granian(d, (chain, key, ca_file)),
                                    work / "g1", False),
        "HTTPS HTTP/2, granian": (lambda d: granian(d, (chain, key, ca_file)), work / "g2", True),
    }  # fmt: skip
    source = work / "source.bin"
    with open(source, "wb") as handle:
        handle.truncate(size)  # zeros: TLS and framing cost the same for any bytes
    speeds: dict[str, list[float]] = {}
    try:
        with contextlib.ExitStack() as running:
            endpoints = {name: running.enter_context(start(data_dir))
                         for name, (start, data_dir, _) in setups.items()}  # fmt: skip
            for _ in range(args.rounds):
                for name, (_, data_dir, http2) in setups.items():
                    speed = upload(endpoints[name], ca_file, source, http2)
                    speeds.setdefault(name, []).append(speed)
                    shutil.rmtree(data_dir / "uploads")
                    (data_dir / "uploads").mkdir()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    best = best_of_rounds(speeds)
    baseline = best["plain HTTP/1.1"]
    table = speed_table(["transport"], best, lambda _: baseline, "vs plain HTTP")
    save("tls_throughput", f"one PATCH of {args.size} (data on {args.dir}, digests off)",
         table, speeds)  # fmt: skip


if __name__ == "__main__":
    main()
