"""The design note's chunk API next to tus, through the same haul server (data on local disk):
one file in 5 MiB chunks, 3 at a time, each way from the same Node process type.

- the note's flow: SparkMD5 of the file first (timed apart: the client's cost, not the
  server's), then GET /exist, POST /upload-chunk (multipart: chunk, index, fileHash) three at a
  time, POST /merge (the server joins the chunks and checks their MD5 against fileHash);
  as the note sketches it (fetch + FormData, the chunk part first in the form, so the server
  spools it to a temporary file until the fields say where it belongs), with chunkHash too
  (SparkMD5 of each chunk), then with the same multipart bytes built as one Blob (Node's
  FormData encoder is slower than a browser's: this row shows what it costs here), and with
  the fields first (the chunk then streams straight into storage);
- tus: tus-js-client, chunkSize 5 MiB, parallelUploads 3 (three partials sent in 5 MiB PATCHes,
  then a final concatenation; the server hashes SHA-256 as the bytes arrive).

Both are Node clients speaking HTTP/1.1 with the same request size and the same number in
flight, so what differs is the API and what the server does for it. Each measurement gets a
fresh server and data dir (no dedup between runs). Times run from the first request to the
answer that the file is complete.

    nice .venv/bin/python bench/chunk_api_throughput.py [--size 1GiB] [--dir /var/tmp]

Prints a markdown table (MB/s and the ratio to tus) and writes JSON and markdown under
bench/results/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.helpers import JS_DIR, HaulServer, env_without_proxy, random_file

from bench.report import best_of_rounds, save, speed_table
from haul.config import parse_size

MiB = 1 << 20
WAYS = {
    "tus-js-client, chunkSize 5 MiB, parallelUploads 3": {"way": "tus"},
    "note's API as sketched: fetch + FormData, chunk part first": {"way": "note"},
    "note's API, fetch + FormData, with chunkHash (SparkMD5 per chunk)": {
        "way": "note",
        "chunkHash": True,
    },
    "note's API, the same multipart bytes as one Blob (as a browser sends them)": {
        "way": "note",
        "blobForm": True,
    },
    "note's API, one Blob, index and fileHash before the chunk part": {
        "way": "note",
        "blobForm": True,
        "fieldsFirst": True,
    },
}
TUS = next(iter(WAYS))


def one_upload(work: Path, source: Path, options: dict[str, object]) -> dict[str, float]:
    """A fresh server on ``work``, one upload through it; the client's timings."""
    server = HaulServer(data_dir=work / "data", extra=["--sweep-interval", "0"]).start()
    try:
        asked = {"base": server.url, "file": str(source), "chunkSize": 5 * MiB, "parallel": 3}
        command = ["node", str(JS_DIR / "bench_chunk_api.mjs"), json.dumps({**asked, **options})]
        done = subprocess.run(
            command, capture_output=True, text=True, env=env_without_proxy(), check=False
        )
        assert done.returncode == 0, done.stderr[-2000:]
        result: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
        return result
    finally:
        server.stop()
        shutil.rmtree(work / "data", ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="1GiB")
    parser.add_argument("--dir", default="/var/tmp", help="the server's data dir goes here")
    parser.add_argument("--source-dir", default="/dev/shm", help="where the file is read from")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    size = parse_size(args.size)
    work = Path(tempfile.mkdtemp(prefix="haul-bench-", dir=args.dir))
    sources = Path(tempfile.mkdtemp(prefix="haul-bench-", dir=args.source_dir))
    runs: dict[str, list[float]] = {}
    hashing: list[float] = []
    merging: list[float] = []
    try:
        source = random_file(sources / "source.bin", size, seed=15)
        for _ in range(args.rounds):  # interleaved rounds: noise hits every way alike
            for name, options in WAYS.items():
                result = one_upload(work, source, options)
                runs.setdefault(name, []).append(size / (result["ms"] / 1000))
                if "hashMs" in result:
                    hashing.append(size / (result["hashMs"] / 1000))
                    merging.append(result["mergeMs"] / 1000)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(sources, ignore_errors=True)
    best = best_of_rounds(runs)
    table = speed_table(["client and API"], best, lambda _: best[TUS], "vs tus")
    table += (
        f"\n\nThe note's client hashes the file with SparkMD5 before it sends a byte: "
        f"{max(hashing) / 1e6:.0f} MB/s, not counted above. The /merge request (the server reads "
        f"the chunks back for their MD5, then for the SHA-256) took {min(merging):.1f} to "
        f"{max(merging):.1f} s of each note's time."
    )
    title = f"{args.size} in 5 MiB chunks, 3 at a time, one haul server (data on {args.dir})"
    save("chunk_api_throughput", title, table, runs)


if __name__ == "__main__":
    main()
