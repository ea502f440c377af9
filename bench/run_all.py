"""Every server benchmark, side by side with its baselines, in one run.

    ./dev bench            # full sizes (2 GiB single upload, 10 GiB memory run, 500 clients)
    ./dev bench --quick    # smaller sizes, same tables

Writes bench/results/<timestamp>.md and .json and prints the markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bench.loadgen import many_uploads
from bench.servers import (
    ROOT,
    RssSampler,
    bare_receiver,
    ceiling,
    create,
    curl_patch,
    haul_granian,
    haul_server,
    node_server,
    remove,
    scratch,
)

GiB, MiB = 1 << 30, 1 << 20


def mbps(value: float) -> str:
    return f"{value / 1e6:.0f}"


def section(title: str, header: list[str], rows: list[list[str]]) -> str:
    """A markdown section: a title and a table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return f"### {title}\n\n" + "\n".join(lines)


def zero_digest(size: int) -> str:
    digest, block = hashlib.sha256(), bytes(MiB)
    for _ in range(size // MiB):
        digest.update(block)
    return base64.b64encode(digest.digest()).decode()


def single_upload(size: int, dirs: list[str], rounds: int, source: Path) -> tuple[str, dict]:
    checksum = f"Upload-Checksum: sha256 {zero_digest(size)}"
    results: dict[str, dict[str, float]] = {}
    for _ in range(rounds):
        for base in dirs:
            row = results.setdefault(base, {})

            def best(key: str, value: float, row: dict[str, float] = row) -> None:
                row[key] = max(row.get(key, 0.0), value)

            best("ceiling", ceiling(Path(base), size))
            work = scratch(base)
            try:
                with haul_server(work / "haul") as haul:
                    best("haul", curl_patch(create(haul.endpoint, size), source))
                    remove(work / "haul" / "uploads")
                    (work / "haul" / "uploads").mkdir()
                    best("haul_sha256", curl_patch(create(haul.endpoint, size), source, checksum))
                remove(work / "haul")
                with haul_server(work / "haul", "--no-verify-digest") as haul:
                    best("haul_noverify", curl_patch(create(haul.endpoint, size), source))
                remove(work / "haul")
                with node_server(work / "node") as node:
                    best("node", curl_patch(create(node.endpoint, size), source))
                remove(work / "node")
                with bare_receiver(work / "bare") as bare:
                    best("bare", curl_patch(bare.endpoint, source))
            finally:
                remove(work)
    header = ["data dir", "ceiling (dd)", "bare Python receiver", "haul", "haul + sha256 checksum",
              "haul, --no-verify-digest", "@tus/server (Node)", "haul/Node", "haul+sha256/Node",
              "haul/ceiling", "haul --no-verify-digest/ceiling", "haul/bare receiver",
              "verification on/off"]  # fmt: skip
    rows = [
        [base, mbps(r["ceiling"]), mbps(r["bare"]), mbps(r["haul"]), mbps(r["haul_sha256"]),
         mbps(r["haul_noverify"]), mbps(r["node"]), f"{r['haul'] / r['node']:.2f}",
         f"{r['haul_sha256'] / r['node']:.2f}", f"{r['haul'] / r['ceiling']:.2f}",
         f"{r['haul_noverify'] / r['ceiling']:.2f}", f"{r['haul'] / r['bare']:.2f}",
         f"{r['haul'] / r['haul_noverify']:.2f}"]
        for base, r in results.items()
    ]  # fmt: skip
    title = f"Single upload, one stream, {size / GiB:.1f} GiB (MB/s, curl as the client)"
    return section(title, header, rows), results


def parallel_upload(size: int, dirs: list[str], parts_dir: Path) -> tuple[str, dict]:
    part, chunk = size // 4, 16 * MiB
    sources = [parts_dir / f"part{i}" for i in range(4)]
    chunk_source = parts_dir / "chunk"
    for path, length in [*((p, part) for p in sources), (chunk_source, chunk)]:
        subprocess.run(["truncate", "-s", str(length), str(path)], check=True)

    def four_partials(endpoint: str) -> list[str]:
        urls = [create(endpoint, part, **{"Upload-Concat": "partial"}) for _ in range(4)]
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(curl_patch, urls, sources))
        return urls

    def tagged_chunks(endpoint: str) -> list[str]:
        """How the haul client and the upload page send: many chunks in file order, 4 at a
        time, each tagged with its place (haul-part), so the server hashes them as they arrive."""

        def send(index: int) -> str:
            tag = base64.b64encode(f"bench {index}".encode()).decode()
            headers = {"Upload-Concat": "partial", "Upload-Metadata": f"haul-part {tag}"}
            url = create(endpoint, chunk, **headers)
            curl_patch(url, chunk_source)
            return url

        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(send, range(size // chunk)))

    ways = {
        "4 partials": four_partials,
        f"{size // chunk} tagged chunks of 16 MiB, 4 at a time": tagged_chunks,
    }
    results = {}
    for way, send_partials in ways.items():
        for base, verify in ((d, v) for d in dirs for v in (True, False)):
            work = scratch(base)
            extra = () if verify else ("--no-verify-digest",)
            try:
                with haul_server(work / "haul", *extra) as haul:
                    started = time.perf_counter()
                    urls = send_partials(haul.endpoint)
                    sent = time.perf_counter()
                    concat = "final;" + " ".join(httpx.URL(u).path for u in urls)
                    headers = {"Tus-Resumable": "1.0.0", "Upload-Concat": concat}
                    final = httpx.post(haul.endpoint, timeout=600, headers=headers)
                    assert final.status_code == 201, final.text
                    done = time.perf_counter()
                how = "SHA-256 verified" if verify else "--no-verify-digest"
                results[f"{base}, {how}, {way}"] = {
                    "throughput": size / (done - started),
                    "finalize_s": done - sent,
                }
            finally:
                remove(work)
    rows = [[base, mbps(r["throughput"]), f"{r['finalize_s'] * 1000:.0f} ms"]
            for base, r in results.items()]  # fmt: skip
    title = f"Parallel upload, partials + concatenation, {size / GiB:.1f} GiB"
    header = ["data dir", "throughput MB/s (4 streams + finalize)", "finalize"]
    return section(title, header, rows), results


def memory(size: int, base: str, source: Path) -> tuple[str, dict]:
    work = scratch(base)
    try:
        with haul_server(work / "haul") as haul:
            url = create(haul.endpoint, size)
            with RssSampler(haul.pid) as sampler:
                time.sleep(0.3)
                before = sampler.samples[-1][1]
                speed = curl_patch(url, source)
        start = sampler.samples[0][0]
        half = [rss for t, rss in sampler.samples if t - start < (size / speed) / 2 + 0.3]
        result = {"baseline_mib": before / MiB, "peak_mib": sampler.peak / MiB,
                  "peak_first_half_mib": max(half) / MiB,
                  "growth_mib": (sampler.peak - before) / MiB}  # fmt: skip
    finally:
        remove(work)
    header = ["upload", "RSS before", "peak RSS, first half", "peak RSS, whole upload", "growth"]
    row = [f"{size / GiB:.0f} GiB to {base}", f"{result['baseline_mib']:.0f} MiB",
           f"{result['peak_first_half_mib']:.0f} MiB", f"{result['peak_mib']:.0f} MiB",
           f"{result['growth_mib']:.1f} MiB"]  # fmt: skip
    return section(f"Server memory while receiving {size / GiB:.0f} GiB", header, [row]), result


def clients(count: int, base: str) -> tuple[str, dict]:
    results = {}
    work = scratch(base)
    # Every client comes from 127.0.0.1 here: the per-IP caps meant for abuse must not apply.
    one_ip = ("--max-connections-per-client", "0", "--max-requests-per-client", "0")
    try:
        with haul_server(work / "haul", "--no-fsync", *one_ip) as haul:
            results["haul (no fsync)"] = asyncio.run(many_uploads(haul.endpoint, count, MiB, count))
        with haul_server(work / "haul-bare", "--no-fsync", "--no-metrics", *one_ip) as haul:
            results["haul (no fsync, --no-metrics)"] = asyncio.run(
                many_uploads(haul.endpoint, count, MiB, count)
            )
        with haul_server(work / "haul-fsync", *one_ip) as haul:
            results["haul (fsync, default)"] = asyncio.run(
                many_uploads(haul.endpoint, count, MiB, count)
            )
        with node_server(work / "node") as node:
            results["@tus/server (Node)"] = asyncio.run(
                many_uploads(node.endpoint, count, MiB, count)
            )
    finally:
        remove(work)
    rows = [[name, f"{r['uploads_per_s']:.0f}", f"{r['p50_ms']:.0f} ms", f"{r['p99_ms']:.0f} ms"]
            for name, r in results.items()]  # fmt: skip
    title = f"{count} concurrent uploads of 1 MiB (creation + one PATCH each), data on {base}"
    return section(title, ["server", "uploads/s", "p50 latency", "p99 latency"], rows), results


def instant_upload(sizes: list[int], base: str, sources: Path) -> tuple[str, dict]:
    """Server-side latency of an instant upload of content already stored (median of 5)."""
    results = {}
    work = scratch(base)
    try:
        with haul_server(work / "haul", "--anonymous-dedup") as haul:
            for size in sizes:
                source = sources / f"instant-{size}"
                subprocess.run(["truncate", "-s", str(size), str(source)], check=True)
                digest = zero_digest(size)
                curl_patch(create(haul.endpoint, size), source)
                timings = []
                for _ in range(5):
                    started = time.perf_counter()
                    url = create(haul.endpoint, size, **{"Repr-Digest": f"sha-256=:{digest}:"})
                    timings.append(time.perf_counter() - started)
                    offset = httpx.head(url, headers={"Tus-Resumable": "1.0.0"})
                    assert offset.headers["upload-offset"] == str(size), "not instant"
                source.unlink()
                results[f"{size / GiB:g} GiB"] = sorted(timings)[2] * 1000
    finally:
        remove(work)
    rows = [[name, f"{ms:.1f} ms"] for name, ms in results.items()]
    title = f"Instant upload of content already stored (POST to 201, median of 5), data on {base}"
    return section(title, ["upload size", "latency"], rows), results


def asgi_servers(size: int, base: str, source: Path, rounds: int) -> tuple[str, dict]:
    results: dict[str, float] = {}
    for _ in range(rounds):
        for name, runner in (("uvicorn", haul_server), ("granian (embedded)", haul_granian)):
            work = scratch(base)
            try:
                with runner(work / "data") as server:
                    speed = curl_patch(create(server.endpoint, size), source)
                results[name] = max(results.get(name, 0.0), speed)
            finally:
                remove(work)
    rows = [[name, mbps(speed), f"{speed / results['uvicorn']:.2f}"]
            for name, speed in results.items()]  # fmt: skip
    title = f"The same application under two ASGI servers, {size / GiB:.1f} GiB to {base}"
    return section(title, ["ASGI server", "MB/s", "vs uvicorn"], rows), results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one round")
    parser.add_argument("--rounds", type=int, help="rounds of each measurement, each figure "
                        "the best of them (default: 1 with --quick, else 2)")  # fmt: skip
    parser.add_argument("--tmpfs", default="/dev/shm")
    parser.add_argument("--disk", default="/var/tmp")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these sections "
                        "(single parallel memory clients instant asgi client "
                        "chunkapi s3)")  # fmt: skip
    args = parser.parse_args()
    wanted = set(args.only or ["single", "parallel", "memory", "clients", "instant", "asgi",
                               "client", "chunkapi", "s3"])  # fmt: skip
    quick = args.quick
    size = 512 * MiB if quick else 2 * GiB
    rounds = args.rounds or (1 if quick else 2)
    dirs = [args.tmpfs, args.disk]
    sources = scratch(args.tmpfs)
    sections: list[tuple[str, object]] = []
    try:
        source = sources / "zeros"
        big = sources / "zeros-big"
        subprocess.run(["truncate", "-s", str(size), str(source)], check=True)  # sparse: no RAM
        subprocess.run(["truncate", "-s", str((2 if quick else 10) * GiB), str(big)], check=True)
        for name, run in (
            ("single", lambda: single_upload(size, dirs, rounds, source)),
            ("parallel", lambda: parallel_upload(size, dirs, sources)),
            ("memory", lambda: memory((2 if quick else 10) * GiB, args.disk, big)),
            ("clients", lambda: clients(100 if quick else 500, args.tmpfs)),
            (
                "instant",
                lambda: instant_upload(
                    [GiB // 4, GiB] if quick else [GiB, 10 * GiB], args.disk, sources
                ),
            ),
            ("asgi", lambda: asgi_servers(size, args.tmpfs, source, rounds)),
        ):
            if name in wanted:
                print(f"running {name} ...", file=sys.stderr, flush=True)
                sections.append(run())
    finally:
        remove(sources)
    stamp = time.strftime("%Y-%m-%d %H:%M")
    report = [f"## haul benchmarks, {stamp} ({'quick' if quick else 'full'} run, "
              f"{__import__('os').cpu_count()} cores)"]  # fmt: skip
    report += [md for md, _ in sections]
    if "client" in wanted:
        print("running client throughput ...", file=sys.stderr, flush=True)
        client_md = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "client_throughput.py"),
             "--size", "256MiB" if quick else "1GiB", "--rounds", str(rounds)],
            capture_output=True, text=True, check=True,
        ).stdout.split("\n", 2)[2]  # fmt: skip
        report.append(
            "### Client throughput: haul vs tus-js-client, same server\n\n" + client_md.strip()
        )
    if "chunkapi" in wanted:
        print("running the chunk API against tus ...", file=sys.stderr, flush=True)
        chunk_md = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "chunk_api_throughput.py"),
             "--size", "256MiB" if quick else "1GiB", "--rounds", str(rounds),
             "--dir", args.disk, "--source-dir", args.tmpfs],
            capture_output=True, text=True, check=True,
        ).stdout.split("\n", 2)[2]  # fmt: skip
        report.append(
            "### The design note's chunk API vs tus, same server, 5 MiB chunks, 3 at a time\n\n"
            + chunk_md.strip()
        )
    if "s3" in wanted:
        print("running S3 throughput ...", file=sys.stderr, flush=True)
        s3_md = subprocess.run(
            [sys.executable, "-m", "bench.s3_throughput", "--size", "128MiB" if quick else "256MiB",
             "--rounds", str(rounds if quick else 3)],
            capture_output=True, text=True, check=True, cwd=ROOT,
        ).stdout  # fmt: skip
        title, _, table = s3_md.partition("\n\n")
        report.append(f"### {title}\n\n{table.strip()}")
    text = "\n\n".join(report) + "\n"
    print(text)
    out = ROOT / "bench" / "results"
    name = time.strftime("%Y%m%d-%H%M%S") + ("-quick" if quick else "")
    if args.only:
        name += "-" + "-".join(args.only)
    (out / f"{name}.md").write_text(text)
    (out / f"{name}.json").write_text(json.dumps([data for _, data in sections], indent=2))


if __name__ == "__main__":
    main()
