"""Where `haul upload` loses to tus-js-client on loopback, with no pre-pass to blame
(--no-dedup): the same file to the same server, one stream, timed as whole processes with the
CPU time each client process used.

    .venv/bin/python bench/client_profile.py [--size 512MiB] [--rounds 3]

Rows: haul upload --parallel 1; tus-js-client sending the file in one PATCH (its default);
tus-js-client cut into haul's chunks (one PATCH per chunk, each waiting for its answer, as haul
does); and the CPU that haul's two passes over the bytes cost on their own (CRC-32 of every
chunk for Upload-Checksum, SHA-256 of the file for Repr-Digest). Prints a markdown table (the
median of the rounds) and writes it with the raw figures under bench/results/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.helpers import JS_DIR, HaulServer, env_without_proxy, random_file

from bench.report import RESULTS
from haul.client.upload import choose_chunk_size
from haul.config import parse_size


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall time and the child's CPU time (user + system) of one client process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def hashing_cpu(source: Path, chunk: int) -> float:
    """CPU seconds of CRC-32 per chunk plus SHA-256 of the whole file, as haul's client does."""
    start = time.process_time()
    whole = hashlib.sha256()
    with open(source, "rb") as file:
        while block := file.read(chunk):
            zlib.crc32(block)
            whole.update(block)
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="512MiB")
    parser.add_argument("--dir", default="/dev/shm")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size = parse_size(args.size)
    chunk = choose_chunk_size(size, None)
    work = Path(tempfile.mkdtemp(prefix="haul-bench-", dir=args.dir))
    runs: dict[str, list[tuple[float, float]]] = {}
    try:
        source = random_file(work / "source.bin", size)
        server = HaulServer(data_dir=work / "data", extra=["--sweep-interval", "0"]).start()
        env = {**env_without_proxy(), "HAUL_STATE_DIR": str(work / "state")}
        haul = [str(Path(sys.executable).parent / "haul"), "upload", str(source), "--server",
                server.url, "--parallel", "1", "--no-resume", "--no-dedup", "--json"]  # fmt: skip

        def tus_js(**options: object) -> list[str]:
            base = {"file": str(source), "endpoint": f"{server.url}/files/", "parallelUploads": 1}
            return ["node", str(JS_DIR / "tus_upload.mjs"), json.dumps({**base, **options})]

        clients = {
            "haul upload --parallel 1 --no-dedup": haul,
            "tus-js-client, one PATCH": tus_js(),
            f"tus-js-client, chunkSize {chunk >> 20} MiB (haul's chunks)": tus_js(chunkSize=chunk),
        }
        try:
            for _ in range(args.rounds):  # interleaved rounds: noise hits every line alike
                for name, command in clients.items():
                    runs.setdefault(name, []).append(timed(command, env))
                    shutil.rmtree(work / "data" / "uploads")
                    (work / "data" / "uploads").mkdir()
        finally:
            server.stop()
        passes = [hashing_cpu(source, chunk) for _ in range(args.rounds)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = ["| client | MB/s (median) | client CPU s (median) |", "|---|---|---|"]
    for name, values in runs.items():
        speed = statistics.median(size / wall for wall, _ in values)
        cpu = statistics.median(cpu for _, cpu in values)
        lines.append(f"| {name} | {speed / 1e6:.0f} | {cpu:.2f} |")
    lines.append(f"| CRC-32 per chunk + SHA-256 of the file, in-process | | "
                 f"{statistics.median(passes):.2f} |")  # fmt: skip
    table = "\n".join(lines)
    title = f"client profile: {args.size} over loopback, one stream (data on {args.dir})"
    print(f"{title}\n\n{table}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"client_profile-{stamp}.md").write_text(f"{title}\n\n{table}\n")
    raw = {"runs": runs, "hashing_cpu": passes, "chunk": chunk}
    (RESULTS / f"client_profile-{stamp}.json").write_text(json.dumps(raw, indent=2))


if __name__ == "__main__":
    main()
