"""Uploads from a browser (Debian's Chromium, headless): haul's own page next to tus-js-client
with parallelUploads and Uppy's Dashboard with @uppy/tus, the same file to the same server in
the same run. Each is timed from choosing the file to the server's answer that it is
complete; the page's time includes hashing the file (SHA-256 in a Web Worker) first.

    .venv/bin/python bench/browser_throughput.py [--size 512MiB] [--dir /dev/shm] [--rounds 2]

Prints a markdown table (MB/s and the ratio to tus-js-client) and writes JSON and markdown
under bench/results/.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from playwright.sync_api import Browser, expect
from tests.browser import build_client_bundles, chromium, serve_test_page
from tests.helpers import HaulServer, random_file

from bench.report import best_of_rounds, save, speed_table
from haul.config import parse_size

TIMEOUT = 600_000


def haul_page(browser: Browser, server: HaulServer, source: Path, _: Path) -> float:
    context = browser.new_context()
    page = context.new_page()
    page.goto(server.url + "/")
    expect(page.locator("body[data-ready=true]")).to_have_count(1)
    started = time.monotonic()
    page.set_input_files("#picker", str(source))
    expect(page.locator(".card[data-state=done]")).to_have_count(1, timeout=TIMEOUT)
    elapsed = time.monotonic() - started
    context.close()
    return elapsed


def tus_js(browser: Browser, server: HaulServer, source: Path, bundles: Path) -> float:
    context = browser.new_context()
    page = context.new_page()
    serve_test_page(page, server.url, bundles, "tus-parallel", '<input id="file" type="file">')
    started = time.monotonic()
    page.set_input_files("#file", str(source))
    expect(page.locator("body[data-url]")).to_have_count(1, timeout=TIMEOUT)
    elapsed = time.monotonic() - started
    context.close()
    return elapsed


def uppy(browser: Browser, server: HaulServer, source: Path, bundles: Path) -> float:
    context = browser.new_context()
    page = context.new_page()
    serve_test_page(page, server.url, bundles, "uppy", '<div id="uppy"></div>')
    page.set_input_files(".uppy-Dashboard-input >> nth=0", str(source))
    started = time.monotonic()
    page.locator(".uppy-StatusBar-actionBtn--upload").click()
    expect(page.locator("body[data-done=true]")).to_have_count(1, timeout=TIMEOUT)
    elapsed = time.monotonic() - started
    context.close()
    return elapsed


CLIENTS: dict[str, Callable[[Browser, HaulServer, Path, Path], float]] = {
    "tus-js-client, parallelUploads 4": tus_js,
    "Uppy Dashboard + @uppy/tus": uppy,
    "haul page (hash first, 4 chunks in parallel)": haul_page,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="512MiB")
    parser.add_argument("--dir", default="/dev/shm")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    size = parse_size(args.size)
    work = Path(tempfile.mkdtemp(prefix="haul-bench-", dir=args.dir))
    speeds: dict[str, list[float]] = {}
    try:
        bundles = build_client_bundles(work / "bundles")
        with chromium() as browser:
            for round_ in range(args.rounds):  # interleaved: noise hits every client alike
                for name, run in CLIENTS.items():
                    # A fresh server and file each time: no instant upload of the last run.
                    source = random_file(work / f"source-{round_}-{len(speeds.get(name, []))}.bin",
                                         size, seed=hash((name, round_)) & 0xFFFF)  # fmt: skip
                    server = HaulServer(data_dir=work / "data", extra=["--sweep-interval", "0"])
                    server.start()
                    try:
                        elapsed = run(browser, server, source, bundles)
                    finally:
                        server.stop()
                        shutil.rmtree(work / "data", ignore_errors=True)
                        source.unlink()
                    speeds.setdefault(name, []).append(size / elapsed)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    best = best_of_rounds(speeds)
    baseline = best["tus-js-client, parallelUploads 4"]
    table = speed_table(["browser client"], best, lambda _: baseline, "vs tus-js-client")
    save("browser_throughput", f"browser upload of {args.size} to haul (data on {args.dir})",
         table, speeds)  # fmt: skip


if __name__ == "__main__":
    main()
