"""A parallel tus upload on S3 in both orders: partials, then the final (tus-js-client: the
final is assembled by UploadPartCopy), or the final first (its partials' parts land in its
multipart upload: nothing is copied). Times the whole upload and the final's creation or the
last partial's request, which is where the assembly happens.

    .venv/bin/python -m bench.s3_parallel --size 256MiB --partials 4
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import tempfile
import time
from pathlib import Path

import httpx
from tests.helpers import OCTETS, TUS, HaulServer
from tests.services import S3_ACCESS, S3_SECRET, ceph_rgw, create_bucket

from bench.s3_patch import MiB
from haul.config.kinds import parse_size


def send(url: str, data: bytes, chunk: int) -> float:
    """PATCH ``data`` in ``chunk``s; the time of the last request."""
    with httpx.Client(trust_env=False, timeout=300) as client:
        last = 0.0
        for at in range(0, len(data), chunk):
            started = time.perf_counter()
            answer = client.patch(url, content=data[at : at + chunk], headers={
                **TUS, "Upload-Offset": str(at), "Content-Type": OCTETS})  # fmt: skip
            answer.raise_for_status()
            last = time.perf_counter() - started
        return last


def upload(server: HaulServer, pieces: list[bytes], chunk: int, final_first: bool) -> str:
    with httpx.Client(trust_env=False, timeout=300) as client:
        started = time.perf_counter()
        urls = []
        for piece in pieces:
            made = client.post(server.endpoint, headers={
                **TUS, "Upload-Length": str(len(piece)), "Upload-Concat": "partial"})  # fmt: skip
            urls.append(str(httpx.URL(server.endpoint).join(made.headers["location"])))
        header = {**TUS, "Upload-Concat": "final;" + " ".join(urls)}
        if final_first:
            final = client.post(server.endpoint, headers=header).headers["location"]
        with concurrent.futures.ThreadPoolExecutor(len(pieces)) as pool:
            lasts = list(pool.map(send, urls, pieces, [chunk] * len(urls)))
        assembling = max(lasts)
        if not final_first:
            created = time.perf_counter()
            final = client.post(server.endpoint, headers=header).headers["location"]
            assembling = time.perf_counter() - created
        url = httpx.URL(server.endpoint).join(final)
        while client.head(url, headers=TUS).headers.get("upload-offset") != str(
            sum(map(len, pieces))
        ):
            time.sleep(0.05)
        took = time.perf_counter() - started
        total = sum(map(len, pieces))
        order = "final first" if final_first else "final last "
        return (f"{order}: {total / took / MiB:.0f} MiB/s in all; the request that assembled "
                f"the final took {assembling:.2f} s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="256MiB")
    parser.add_argument("--partials", type=int, default=4)
    parser.add_argument("--chunk", default="32MiB")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    size, chunk = parse_size(args.size), parse_size(args.chunk)
    each = size // args.partials
    pieces = [os.urandom(each) for _ in range(args.partials)]
    with ceph_rgw() as rgw:
        create_bucket(rgw, "bench")
        server = HaulServer(data_dir=Path(tempfile.mkdtemp(prefix="haul-s3par-")) / "data", extra=[
            "--storage", "s3", "--s3-endpoint", rgw, "--s3-bucket", "bench",
            "--s3-access-key", S3_ACCESS, "--s3-secret-key", S3_SECRET, "--log-level", "warning",
        ])  # fmt: skip
        server.start()
        try:
            for _ in range(args.runs):
                for final_first in (False, True):
                    print(upload(server, pieces, chunk, final_first))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
