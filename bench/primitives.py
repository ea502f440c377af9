"""The primitives behind two README figures: concatenation by hard links next to an in-kernel
copy of the same bytes, and how fast one core computes SHA-256.

    .venv/bin/python bench/primitives.py [--size 512MiB] [--parts 64] [--dir /dev/shm]

Concatenation runs LocalStorage.concatenate (one link() per partial, an fsync of the staging
directory, a rename) on --parts partials that together hold --size, then copies the same
partials into one file with os.copy_file_range. SHA-256 hashes --size bytes from memory in
1 MiB blocks. Each figure is the median of --rounds; markdown and JSON go to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import RESULTS
from haul.config import parse_size
from haul.storage.local import LocalStorage

MiB = 1 << 20


def partials(root: Path, size: int, parts: int) -> list[str]:
    """``parts`` stored uploads of equal size, named like upload ids."""
    ids = [f"{index:032x}" for index in range(1, parts + 1)]
    block = os.urandom(size // parts)
    for upload_id in ids:
        (root / upload_id).write_bytes(block)
    return ids


def link_concatenation(storage: LocalStorage, final_id: str, ids: list[str]) -> float:
    start = time.perf_counter()
    asyncio.run(storage.concatenate(final_id, ids))
    return time.perf_counter() - start


def kernel_copy(root: Path, ids: list[str], target: Path) -> float:
    start = time.perf_counter()
    out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        for upload_id in ids:
            src = os.open(root / upload_id, os.O_RDONLY)
            try:
                left = os.fstat(src).st_size
                while left:
                    left -= os.copy_file_range(src, out, left)
            finally:
                os.close(src)
        os.fsync(out)
    finally:
        os.close(out)
    return time.perf_counter() - start


def sha256_speed(size: int) -> float:
    block = os.urandom(MiB)
    digest = hashlib.sha256()
    start = time.process_time()
    for _ in range(size // MiB):
        digest.update(block)
    return size / (time.process_time() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="512MiB")
    parser.add_argument("--parts", type=int, default=64)
    parser.add_argument("--dir", default="/dev/shm")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size = parse_size(args.size)
    links: list[float] = []
    copies: list[float] = []
    work = Path(tempfile.mkdtemp(prefix="haul-bench-", dir=args.dir))
    try:
        root = work / "uploads"
        storage = LocalStorage(root, fsync=True)
        ids = partials(root, size, args.parts)
        for round_number in range(args.rounds):
            final_id = f"{0xF000 + round_number:032x}"
            links.append(link_concatenation(storage, final_id, ids))
            shutil.rmtree(root / f"{final_id}.parts")
            copies.append(kernel_copy(root, ids, work / "copy.bin"))
            (work / "copy.bin").unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    hashing = [sha256_speed(size) for _ in range(args.rounds)]
    table = "\n".join([
        "| what | median of rounds |",
        "|---|---|",
        f"| concatenation of {args.parts} partials, {args.size} in all, by hard links "
        f"(LocalStorage.concatenate) | {statistics.median(links) * 1000:.1f} ms |",
        f"| the same bytes copied into one file by copy_file_range, then fsync "
        f"| {statistics.median(copies):.2f} s |",
        f"| SHA-256 on one core, from memory | {statistics.median(hashing) / 1e9:.2f} GB/s |",
    ])  # fmt: skip
    title = f"primitives: data on {args.dir}"
    print(f"{title}\n\n{table}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"primitives-{stamp}.md").write_text(f"{title}\n\n{table}\n")
    raw = {"links_s": links, "copy_file_range_s": copies, "sha256_bytes_per_s": hashing}
    (RESULTS / f"primitives-{stamp}.json").write_text(json.dumps(raw, indent=2))


if __name__ == "__main__":
    main()
