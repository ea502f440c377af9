"""Single large upload, one stream: haul's throughput next to the storage ceiling, same run.

    .venv/bin/python bench/single_upload.py [--size 2GiB] [--dir /dev/shm] [--dir /var/tmp]

For each directory: the raw write speed of that directory (1 MiB writes + fsync, the physical
ceiling), then one PATCH of --size bytes to a fresh `haul serve` whose data dir is there, with
and without an Upload-Checksum (sha256). Prints a markdown table and writes JSON under
bench/results/.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.helpers import OCTETS, TUS, HaulServer

from haul.config import parse_size

BLOCK = 1 << 20


def _payload() -> bytes:
    return os.urandom(BLOCK)


def ceiling(directory: Path, size: int, block: bytes) -> float:
    path = directory / "haul-bench-ceiling"
    start = time.perf_counter()
    with open(path, "wb") as out:
        for _ in range(size // BLOCK):
            out.write(block)
        out.flush()
        os.fsync(out.fileno())
    elapsed = time.perf_counter() - start
    path.unlink()
    return size / elapsed


def haul_upload(directory: Path, size: int, block: bytes, checksum: bool) -> float:
    data_dir = Path(tempfile.mkdtemp(prefix="haul-bench-", dir=directory))
    server = HaulServer(data_dir=data_dir / "data").start()
    try:
        with httpx.Client(timeout=600, trust_env=False) as client:
            created = client.post(server.endpoint, headers={**TUS, "Upload-Length": str(size)})
            url = created.headers["location"]
            headers = {**TUS, "Upload-Offset": "0", "Content-Type": OCTETS,
                       "Content-Length": str(size)}  # fmt: skip
            if checksum:
                digest = hashlib.sha256()
                for _ in range(size // BLOCK):
                    digest.update(block)
                headers["Upload-Checksum"] = "sha256 " + base64.b64encode(digest.digest()).decode()

            def body():  # type: ignore[no-untyped-def]
                for _ in range(size // BLOCK):
                    yield block

            start = time.perf_counter()
            response = client.patch(url, content=body(), headers=headers)
            elapsed = time.perf_counter() - start
            assert response.status_code == 204, response.text
        return size / elapsed
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="1GiB")
    parser.add_argument("--dir", action="append", dest="dirs")
    args = parser.parse_args()
    size = parse_size(args.size) // BLOCK * BLOCK
    dirs = [Path(d) for d in (args.dirs or ["/dev/shm", tempfile.gettempdir()])]
    block = _payload()
    rows = []
    for directory in dirs:
        top = ceiling(directory, size, block)
        plain = haul_upload(directory, size, block, checksum=False)
        checked = haul_upload(directory, size, block, checksum=True)
        rows.append(
            {"dir": str(directory), "size": size, "ceiling_Bps": top, "haul_Bps": plain,
             "haul_sha256_Bps": checked, "haul_over_ceiling": plain / top,
             "sha256_over_plain": checked / plain}
        )  # fmt: skip
    lines = [
        "| data dir | ceiling MB/s | haul MB/s | haul+sha256 MB/s | haul/ceiling | sha256/plain |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dir']} | {r['ceiling_Bps'] / 1e6:.0f} | {r['haul_Bps'] / 1e6:.0f} | "
            f"{r['haul_sha256_Bps'] / 1e6:.0f} | {r['haul_over_ceiling']:.2f} | "
            f"{r['sha256_over_plain']:.2f} |"
        )
    table = "\n".join(lines)
    print(f"single upload of {size / 2**30:.2f} GiB, one stream\n\n{table}")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"single_upload-{stamp}.json").write_text(json.dumps(rows, indent=2))
    (out / f"single_upload-{stamp}.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
