"""The S3 write path alone: a sequence of PATCH requests through a real `haul serve --storage s3`
on a local Ceph RADOS Gateway, against the store's own speed (the same bytes sent as concurrent
multipart parts straight to it). Optionally under py-spy.

    .venv/bin/python -m bench.s3_patch --size 256MiB --chunk 32MiB [--profile out.svg]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from tests.helpers import OCTETS, TUS, HaulServer
from tests.services import S3_ACCESS, S3_SECRET, ceph_rgw, create_bucket, s3_client

from haul.config.kinds import parse_size

MiB = 1 << 20


def through_haul(rgw: str, bucket: str, data: bytes, chunk: int, extra: list[str],
                 profile: str | None) -> float:  # fmt: skip
    root = Path(tempfile.mkdtemp(prefix="haul-s3bench-"))
    server = HaulServer(data_dir=root / "data", extra=[
        "--storage", "s3", "--s3-endpoint", rgw, "--s3-bucket", bucket,
        "--s3-access-key", S3_ACCESS, "--s3-secret-key", S3_SECRET, "--log-level", "warning",
        *extra,
    ])  # fmt: skip
    server.start()
    spy = None
    try:
        assert server.proc is not None
        if profile:
            spy_bin = str(Path(sys.executable).parent / "py-spy")
            kind = "raw" if profile.endswith(".txt") else "flamegraph"  # raw: collapsed stacks
            spy = subprocess.Popen([spy_bin, "record", "-o", profile, "-r", "200", "-f", kind,
                                    "--pid", str(server.proc.pid)])  # fmt: skip
            time.sleep(1)
        with httpx.Client(trust_env=False, timeout=300) as client:
            made = client.post(server.endpoint, headers={**TUS, "Upload-Length": str(len(data))})
            made.raise_for_status()
            url = httpx.URL(server.endpoint).join(made.headers["Location"])
            started = time.perf_counter()
            for at in range(0, len(data), chunk):
                answer = client.patch(url, content=data[at : at + chunk], headers={
                    **TUS, "Upload-Offset": str(at), "Content-Type": OCTETS})  # fmt: skip
                answer.raise_for_status()
            took = time.perf_counter() - started
            assert int(answer.headers["Upload-Offset"]) == len(data)
        return took
    finally:
        if spy is not None:
            spy.send_signal(2)
            spy.wait(30)
        server.stop()


async def straight(rgw: str, bucket: str, data: bytes, part: int, parallel: int) -> float:
    """What the store takes: the bytes as multipart parts, ``parallel`` at a time."""
    async with s3_client(rgw) as s3:
        started = time.perf_counter()
        mpu: Any = await s3.create_multipart_upload(Bucket=bucket, Key="straight")
        gate = asyncio.Semaphore(parallel)

        async def send(number: int, at: int) -> dict[str, Any]:
            async with gate:
                sent: Any = await s3.upload_part(
                    Bucket=bucket,
                    Key="straight",
                    PartNumber=number,
                    UploadId=mpu["UploadId"],
                    Body=data[at : at + part],
                )
            return {"PartNumber": number, "ETag": sent["ETag"]}

        parts = await asyncio.gather(*[send(n, at) for n, at in
                                       enumerate(range(0, len(data), part), start=1)])  # fmt: skip
        await s3.complete_multipart_upload(Bucket=bucket, Key="straight", UploadId=mpu["UploadId"],
                                           MultipartUpload={"Parts": list(parts)})  # fmt: skip
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="256MiB")
    parser.add_argument("--chunk", default="32MiB", help="bytes per PATCH request")
    parser.add_argument("--part", default="8MiB")
    parser.add_argument("--profile", help="write a py-spy flame graph of the server here")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--in-flight", type=int, nargs="*", default=[0],
                        help="--s3-parts-in-flight values to try (0: the default)")  # fmt: skip
    parser.add_argument("extra", nargs="*", help="more `haul serve` options (after --)")
    args = parser.parse_args()
    size, chunk, part = parse_size(args.size), parse_size(args.chunk), parse_size(args.part)
    data = os.urandom(size)
    with ceph_rgw() as rgw:
        create_bucket(rgw, "bench")
        for parallel in (1, 4):
            took = min(asyncio.run(straight(rgw, "bench", data, part, parallel))
                       for _ in range(args.runs))  # fmt: skip
            print(f"store, {parallel} part(s) at a time: {size / took / MiB:.0f} MiB/s")
        for flight in args.in_flight:
            extra = ["--s3-part-size", args.part, *args.extra]
            if flight:
                extra += ["--s3-parts-in-flight", str(flight)]
            for run in range(args.runs):
                profile = args.profile if run == args.runs - 1 else None
                took = through_haul(rgw, "bench", data, chunk, extra, profile)
                print(f"haul PATCH x{-(-size // chunk)} of {args.chunk}, parts in flight "
                      f"{flight or 'default'}: {size / took / MiB:.0f} MiB/s")  # fmt: skip


if __name__ == "__main__":
    main()
