"""haul on object storage against the store's own client: one Ceph RADOS Gateway, one file,
alternating rounds of every path in one run, each timed as a whole process as a user runs it:

- boto3 ``upload_file`` straight to the store (8 MiB parts, 10 threads), the reference;
- ``haul upload --parallel 1`` and ``--parallel 4`` through ``haul serve --storage s3``;
- ``haul upload --direct`` (presigned parts: the bytes never pass through haul);
- tus-js-client with ``parallelUploads: 4`` through haul.

Each haul path gets a fresh server, so its peak resident memory (VmHWM) is that path's alone.
Between measurements the bucket is emptied and the gateway's garbage collected while idle: the
gateway keeps objects in memory, and deleted bytes are only freed by its collector.

    .venv/bin/python -m bench.s3_throughput [--size 256MiB] [--rounds 3] [--dir /dev/shm]

Prints a markdown table (MB/s, the ratio to boto3, server peak RSS) and saves it with the raw
figures under bench/results/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests import services
from tests.helpers import HAUL, JS_DIR, HaulServer, env_without_proxy, random_file

from bench.report import RESULTS
from haul.config import parse_size

MiB = 1 << 20
BUCKET = "bench"
STORE_BYTES = 4 << 30  # what the gateway may hold at once (it is in memory)
BOTO3 = "boto3 upload_file (8 MiB x 10 threads)"


@contextmanager
def gateway() -> Iterator[tuple[str, Path]]:
    """The test suite's Ceph RGW, with its configuration at hand for the garbage collector."""
    for attempt in range(3):  # a start may fail (a port taken meanwhile): as ceph_rgw() does
        root = Path(tempfile.mkdtemp(prefix="haul-ceph-"))
        try:
            endpoint = services._start_rgw(root)
        except (RuntimeError, subprocess.TimeoutExpired):
            services._stop_rgw(root)
            if attempt == 2:
                raise
            continue
        try:
            yield endpoint, root / "ceph.conf"
        finally:
            services._stop_rgw(root)
        return


def s3(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id=services.S3_ACCESS, aws_secret_access_key=services.S3_SECRET,
    )  # fmt: skip


def empty_bucket(endpoint: str, conf: Path) -> None:
    """Delete every object and unfinished multipart upload, then have the gateway free them."""
    client = s3(endpoint)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=BUCKET, Delete={"Objects": keys})
    for upload in client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []):
        # One may end between the listing and its abort (a partial retired in the background).
        with contextlib.suppress(client.exceptions.NoSuchUpload):
            client.abort_multipart_upload(Bucket=BUCKET, Key=upload["Key"],
                                          UploadId=upload["UploadId"])  # fmt: skip
    command = ["radosgw-admin", "-c", str(conf), "-n", "client.rgw", "gc", "process",
               "--include-all"]  # fmt: skip
    subprocess.run(command, capture_output=True, timeout=300, check=True)


BOTO3_SCRIPT = """
import sys, boto3
from boto3.s3.transfer import TransferConfig
endpoint, access, secret, bucket, path = sys.argv[1:]
client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id=access, aws_secret_access_key=secret)
config = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20,
                        max_concurrency=10)
client.upload_file(path, bucket, "boto3-object", Config=config)
"""


def timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env or env_without_proxy())
    elapsed = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{command[:3]} failed: {done.stderr[-2000:]}")
    return elapsed, done.stdout


def boto3_upload(endpoint: str, source: Path) -> float:
    command = [sys.executable, "-c", BOTO3_SCRIPT, endpoint, services.S3_ACCESS,
               services.S3_SECRET, BUCKET, str(source)]  # fmt: skip
    return timed(command)[0]


def haul_upload(url: str, source: Path, state: Path, *flags: str) -> float:
    command = [HAUL, "upload", str(source), "--server", url, "--no-resume", "--no-dedup",
               "--json", *flags]  # fmt: skip
    elapsed, out = timed(command, {**env_without_proxy(), "HAUL_STATE_DIR": str(state)})
    result = json.loads(out.strip().splitlines()[-1])
    assert result["ok"], out
    return elapsed


def tus_js(url: str, source: Path, parallel: int) -> float:
    options = {"file": str(source), "endpoint": f"{url}/files/", "parallelUploads": parallel}
    elapsed, out = timed(["node", str(JS_DIR / "tus_upload.mjs"), json.dumps(options)])
    assert '"url"' in out.splitlines()[-1], out[-500:]
    return elapsed


def peak_rss(pid: int) -> int:
    """The process's high-water mark of resident memory, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def through_haul(
    endpoint: str, work: Path, send: Callable[[str], float], profile: Callable[[int], Any] | None
) -> tuple[float, int]:
    """Run ``send(server url)`` against a fresh ``haul serve --storage s3``; (seconds, peak RSS)."""
    options = ["--storage", "s3", "--s3-endpoint", endpoint, "--s3-bucket", BUCKET,
               "--s3-access-key", services.S3_ACCESS, "--s3-secret-key", services.S3_SECRET,
               "--sweep-interval", "0"]  # fmt: skip
    data = Path(tempfile.mkdtemp(prefix="haul-data-", dir=work))
    server = HaulServer(data_dir=data, extra=options).start()
    assert server.proc is not None
    profiler = profile(server.proc.pid) if profile else None
    try:
        elapsed = send(server.url)
        rss = peak_rss(server.proc.pid)
    finally:
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)  # py-spy writes its file when interrupted
            profiler.wait(60)
        server.stop()
        shutil.rmtree(data, ignore_errors=True)
    return elapsed, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="256MiB")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default="/dev/shm", help="where the source file lives")
    parser.add_argument("--profile", metavar="FILE", help="record the server with py-spy "
                        "during the first `--parallel 4` upload into FILE (.svg: a flame graph, "
                        ".txt: collapsed stacks)")  # fmt: skip
    args = parser.parse_args()
    size = parse_size(args.size)
    if 2 * size > STORE_BYTES:  # a parallel upload holds its partials and its final at once
        parser.error(f"--size must be at most {STORE_BYTES // 2 // MiB} MiB (the gateway's store)")
    work = Path(tempfile.mkdtemp(prefix="haul-bench-", dir=args.dir))
    speeds: dict[str, list[float]] = {}
    rss: dict[str, list[int]] = {}
    profiled = [False]

    def profile(pid: int) -> Any:
        if not args.profile or profiled[0]:
            return None
        profiled[0] = True
        py_spy = Path(sys.executable).parent / "py-spy"
        kind = {".svg": "flamegraph", ".json": "speedscope"}.get(Path(args.profile).suffix, "raw")
        command = [str(py_spy), "record", "-o", args.profile, "--pid", str(pid), "--idle",
                   "--format", kind]  # fmt: skip
        return subprocess.Popen(command, stdout=subprocess.DEVNULL)

    try:
        source = random_file(work / "source.bin", size, seed=14)
        state = work / "state"
        haul_paths: dict[str, tuple[Callable[[str], float], bool]] = {
            "haul upload --parallel 1": (lambda url: haul_upload(url, source, state, "--parallel",
                                                                 "1"), False),
            "haul upload --parallel 4": (lambda url: haul_upload(url, source, state, "--parallel",
                                                                 "4"), True),
            "haul upload --direct": (lambda url: haul_upload(url, source, state, "--direct"),
                                     False),
            "tus-js-client parallelUploads 4": (lambda url: tus_js(url, source, 4), False),
        }  # fmt: skip
        with gateway() as (endpoint, conf):
            s3(endpoint).create_bucket(Bucket=BUCKET)
            boto3_upload(endpoint, source)  # warm-up: the gateway's first writes are slower
            empty_bucket(endpoint, conf)
            for number in range(args.rounds):  # interleaved: load on the machine hits all alike
                print(f"round {number + 1} of {args.rounds}", file=sys.stderr, flush=True)
                speeds.setdefault(BOTO3, []).append(size / boto3_upload(endpoint, source))
                empty_bucket(endpoint, conf)
                for name, (send, profiled_path) in haul_paths.items():
                    spy = profile if profiled_path else None
                    elapsed, peak = through_haul(endpoint, work, send, spy)
                    speeds.setdefault(name, []).append(size / elapsed)
                    rss.setdefault(name, []).append(peak)
                    empty_bucket(endpoint, conf)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(args.size, speeds, rss)


def report(size: str, speeds: dict[str, list[float]], rss: dict[str, list[int]]) -> None:
    best = {name: max(values) for name, values in speeds.items()}
    header = ["path", "MB/s (best of rounds)", "MB/s (every round)", "vs boto3",
              "server peak RSS"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, speed in best.items():
        every = " / ".join(f"{s / 1e6:.0f}" for s in speeds[name])
        peak = f"{max(rss[name]) / MiB:.0f} MiB" if name in rss else "(no haul)"
        ratio = speed / best[BOTO3]
        lines.append(f"| {name} | {speed / 1e6:.0f} | {every} | {ratio:.2f} | {peak} |")
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    title = (f"Upload of {size} to one Ceph RGW (memstore), whole processes timed, "
             f"{os.cpu_count()} cores, load average {load} at the end")  # fmt: skip
    table = "\n".join(lines)
    print(f"{title}\n\n{table}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    raw = {"speeds": speeds, "peak_rss": rss, "size": size}
    (RESULTS / f"s3_throughput-{stamp}.json").write_text(json.dumps(raw, indent=2))
    (RESULTS / f"s3_throughput-{stamp}.md").write_text(f"{title}\n\n{table}\n")


if __name__ == "__main__":
    main()
