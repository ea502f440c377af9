"""What hooks cost: many concurrent 1 MiB uploads with hooks off, with the post-* hooks on, and
with every hook on (the blocking pre-create and pre-finish asked inside each upload's
requests), in the same run, rounds interleaved, each to a local receiver that answers at once.

    python -m bench.hooks_throughput [--count 500] [--rounds 2] [--base DIR]

Prints a markdown table (uploads/s, latency, ratio to hooks off, how long the outbox took to
drain after the last upload) and saves it under bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
from tests.helpers import free_port, wait_for_port

from bench.loadgen import many_uploads
from bench.report import RESULTS
from bench.servers import haul_server, remove, scratch

MiB = 1 << 20
POSTS = "post-create,post-receive,post-finish,post-terminate,post-expire"
CONFIGS: dict[str, list[str]] = {
    "hooks off": [],
    "post-* hooks (outbox)": ["--hook-events", POSTS],
    "all hooks (pre-* blocking too)": [],
}


async def _receive(port: int) -> None:
    """A receiver that costs next to nothing: reads each request, answers 200 ``{}``."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def _pending(metrics_url: str) -> float:
    for line in httpx.get(metrics_url, trust_env=False).text.splitlines():
        if line.startswith("haul_hook_outbox_pending "):
            return float(line.split()[1])
    return 0.0


def one_round(name: str, count: int, work: Path, hook_url: str) -> dict[str, float]:
    one_ip = ("--max-connections-per-client", "0", "--max-requests-per-client", "0")
    # Every upload sends the same bytes: with instant upload on, each completion would share
    # the first one's file under its lock, 500 at once (a dedup storm, the same with or without
    # hooks, that times out in 423s); off, so what differs between the rows is the hooks.
    extra = [*one_ip, "--no-fsync", "--no-instant-upload"]
    if name != "hooks off":
        extra += ["--hook-url", hook_url, *CONFIGS[name]]
    data = work / name.split()[0].replace("*", "")
    with haul_server(data, *extra) as haul:
        result = asyncio.run(many_uploads(haul.endpoint, count, MiB, count))
        metrics = haul.endpoint.replace("/files/", "/metrics")
        started = time.perf_counter()
        while name != "hooks off" and _pending(metrics) > 0:
            time.sleep(0.05)
        result["drain_s"] = time.perf_counter() - started
    remove(data)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--base", default=None, help="Directory for the data (default: /tmp).")
    parser.add_argument("--receive", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receive:
        asyncio.run(_receive(args.receive))
        return
    port = free_port()
    receiver = subprocess.Popen([sys.executable, "-m", "bench.hooks_throughput",
                                 "--receive", str(port)])  # fmt: skip
    work = scratch(args.base or "/tmp")
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in CONFIGS}
    try:
        if not wait_for_port(port, 30, receiver):
            raise RuntimeError("the receiver did not start")
        for _ in range(args.rounds):  # interleaved, so a change in the machine's load hits all
            for name in CONFIGS:
                result = one_round(name, args.count, work, f"http://127.0.0.1:{port}/")
                print(f"{name}: {result['uploads_per_s']:.0f} uploads/s", flush=True)
                runs[name].append(result)
    finally:
        receiver.kill()
        receiver.wait()
        remove(work)
    best = {name: max(rounds, key=lambda r: r["uploads_per_s"]) for name, rounds in runs.items()}
    off = best["hooks off"]["uploads_per_s"]
    header = "| hooks | uploads/s (best of rounds) | p50 | p99 | vs hooks off | outbox drained in |"
    lines = [header, "|---|---|---|---|---|---|"]
    for name, r in best.items():
        drained = f"{r['drain_s']:.1f} s" if name != "hooks off" else "-"
        lines.append(
            f"| {name} | {r['uploads_per_s']:.0f} | {r['p50_ms']:.0f} ms | {r['p99_ms']:.0f} ms "
            f"| {r['uploads_per_s'] / off:.2f} | {drained} |"
        )
    title = (
        f"{args.count} concurrent uploads of 1 MiB (creation + one PATCH each), "
        f"best of {args.rounds} rounds, hooks to a local receiver"
    )
    table = "\n".join(lines)
    print(f"### {title}\n\n{table}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"hooks_throughput-{stamp}.md").write_text(f"### {title}\n\n{table}\n")
    (RESULTS / f"hooks_throughput-{stamp}.json").write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
