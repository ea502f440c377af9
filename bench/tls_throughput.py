"""What TLS costs: one large PATCH over plain HTTP/1.1, HTTPS HTTP/1.1 and HTTPS HTTP/2 (haul's
TLS gate, ALPN), same file, same machine, same run; curl as the client.

    .venv/bin/python bench/tls_throughput.py [--size 1GiB] [--dir /dev/shm] [--rounds 2]

Prints a markdown table (MB/s and the ratio to plain HTTP) and writes it under bench/results/.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from tests.helpers import OCTETS, TUS, HaulServer, tls_files

from bench.report import best_of_rounds, save, speed_table
from haul.config import parse_size

BLOCK = 1 << 20


def upload(server: HaulServer, source: Path, http2: bool) -> float:
    """curl sends the PATCH (nghttp2 for HTTP/2): a C client, so the server is what is timed."""
    size = source.stat().st_size
    with httpx.Client(verify=server.tls_context(), timeout=60) as client:
        created = client.post(server.endpoint, headers={**TUS, "Upload-Length": str(size)})
    url = created.headers["location"]
    command = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{speed_upload}",
               "--http2" if http2 else "--http1.1", "-X", "PATCH", url, "-T", str(source),
               "-H", "Tus-Resumable: 1.0.0", "-H", "Upload-Offset: 0",
               "-H", f"Content-Type: {OCTETS}"]  # fmt: skip
    if server.ca_file:
        command += ["--cacert", str(server.ca_file)]
    status, speed = subprocess.run(
        command, capture_output=True, text=True, check=True
    ).stdout.split()
    assert status == "204", status
    return float(speed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="1GiB")
    parser.add_argument("--dir", default="/dev/shm")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    size = parse_size(args.size) // BLOCK * BLOCK
    work = Path(tempfile.mkdtemp(prefix="haul-bench-", dir=args.dir))
    chain, key, ca_file = tls_files(work)
    common = ["--sweep-interval", "0", "--no-verify-digest"]
    tls = ["--tls-cert", str(chain), "--tls-key", str(key)]
    setups = {
        "plain HTTP/1.1": (HaulServer(work / "plain", extra=common), False),
        "HTTPS HTTP/1.1": (
            HaulServer(work / "tls1", extra=[*common, *tls], ca_file=ca_file), False),
        "HTTPS HTTP/2": (
            HaulServer(work / "tls2", extra=[*common, *tls], ca_file=ca_file), True),
    }  # fmt: skip
    source = work / "source.bin"
    with open(source, "wb") as handle:
        handle.truncate(size)  # zeros: TLS and framing cost the same for any bytes
    speeds: dict[str, list[float]] = {}
    try:
        for server, _ in setups.values():
            server.start()
        for _ in range(args.rounds):
            for name, (server, http2) in setups.items():
                speeds.setdefault(name, []).append(upload(server, source, http2))
                shutil.rmtree(server.data_dir / "uploads")
                (server.data_dir / "uploads").mkdir()
    finally:
        for server, _ in setups.values():
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    best = best_of_rounds(speeds)
    baseline = best["plain HTTP/1.1"]
    table = speed_table(["transport"], best, lambda _: baseline, "vs plain HTTP")
    save("tls_throughput", f"one PATCH of {args.size} (data on {args.dir}, digests off)",
         table, speeds)  # fmt: skip


if __name__ == "__main__":
    main()
