"""Client throughput against one haul server: the haul CLI (`haul upload`) at several
--parallel values next to tus-js-client (Node) on the same file, server and machine, in the
same run. Both are timed as whole processes, start-up included.

Two links: loopback (the machine's limit), and loopback through a proxy that caps each TCP
connection at --stream-cap (default 25 MB/s), the way latency and window size cap a single
stream over a real WAN. The second shows what --parallel is for.

    .venv/bin/python bench/client_throughput.py [--size 512MiB] [--dir /dev/shm]

Prints a markdown table (MB/s and the ratio to tus-js-client with one stream) and writes JSON
under bench/results/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.helpers import JS_DIR, HaulServer, env_without_proxy, random_file
from tests.proxy import ChaosProxy

from bench.report import best_of_rounds, save, speed_table
from haul.config import parse_size


def haul_client(url: str, source: Path, parallel: int, state: Path, dedup: bool) -> float:
    # As users run it: the instant-upload check on, unless --no-dedup; the digest is declared
    # and verified either way.
    command = [str(Path(sys.executable).parent / "haul"), "upload", str(source), "--server", url,
               "--parallel", str(parallel), "--no-resume", "--json",
               *(() if dedup else ("--no-dedup",))]  # fmt: skip
    env = {**env_without_proxy(), "HAUL_STATE_DIR": str(state)}
    start = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout
    elapsed = time.perf_counter() - start
    assert json.loads(out.splitlines()[-1])["ok"], out
    return source.stat().st_size / elapsed


def tus_js(url: str, source: Path, parallel: int) -> float:
    options = {"file": str(source), "endpoint": f"{url}/files/", "parallelUploads": parallel}
    start = time.perf_counter()
    command = ["node", str(JS_DIR / "tus_upload.mjs"), json.dumps(options)]
    out = subprocess.run(
        command, capture_output=True, text=True, env=env_without_proxy(), check=True
    )
    elapsed = time.perf_counter() - start
    assert '"url"' in out.stdout.splitlines()[-1], out.stdout[-500:]
    return source.stat().st_size / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="512MiB")
    parser.add_argument("--dir", default="/dev/shm")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-dedup", action="store_true", help="haul upload --no-dedup")
    parser.add_argument("--stream-cap", default="25MB", help="per-connection cap of the WAN link")
    args = parser.parse_args()
    dedup = not args.no_dedup
    work = Path(tempfile.mkdtemp(prefix="haul-bench-", dir=args.dir))
    try:
        source = random_file(work / "source.bin", parse_size(args.size))
        # Every round sends the same file: the server must not find it already stored.
        extra = ["--sweep-interval", "0", "--no-instant-upload"]
        server = HaulServer(data_dir=work / "data", extra=extra).start()
        rows: dict[str, list[float]] = {}
        proxy = ChaosProxy(server.port, rate=parse_size(args.stream_cap)).start()
        links = {"loopback": server.url, f"{args.stream_cap}/s per stream": proxy.url}
        try:
            for _ in range(args.rounds):  # interleaved rounds: noise hits every line alike
                for link, url in links.items():
                    for parallel in (1, 2, 4, 8):
                        speed = haul_client(url, source, parallel, work / "state", dedup)
                        rows.setdefault(f"{link} | haul --parallel {parallel}", []).append(speed)
                    for parallel in (1, 4):
                        speed = tus_js(url, source, parallel)
                        name = f"{link} | tus-js-client parallelUploads {parallel}"
                        rows.setdefault(name, []).append(speed)
                    shutil.rmtree(work / "data" / "uploads")
                    (work / "data" / "uploads").mkdir()
        finally:
            proxy.stop()
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    best = best_of_rounds(rows)

    def baseline(name: str) -> float:  # one stream of tus-js-client on the same link
        return best[f"{name.split(' | ')[0]} | tus-js-client parallelUploads 1"]

    table = speed_table(["link", "client"], best, baseline, "vs tus-js-client x1, same link")
    save("client_throughput", f"client upload of {args.size} to haul (data on {args.dir})",
         table, rows)  # fmt: skip


if __name__ == "__main__":
    main()
