"""Debian's Chromium driven by Playwright, for tests of the upload page and of browser clients."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, Page, Route, sync_playwright

from tests.helpers import JS_DIR

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def build_client_bundles(out: Path) -> Path:
    """Bundles the browser pages of other tus clients (Uppy, tus-js-client) into ``out``."""
    subprocess.run(["node", str(JS_DIR / "browser" / "build.mjs"), str(out)], check=True)
    return out


def serve_test_page(page: Page, base: str, bundles: Path, name: str, body: str) -> None:
    """Serves a test page and its bundle from the haul server's own origin (no CORS involved)."""
    html = (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{name}</title>'
        + (f'<link rel="stylesheet" href="/test/{name}.css">' if name.startswith("uppy") else "")
        + f'</head><body>{body}<script type="module" src="/test/{name}.js"></script></body></html>'
    )

    def serve(body: str | bytes, kind: str) -> Callable[[Route], None]:
        return lambda route: route.fulfill(body=body, content_type=kind)

    page.route(f"{base}/test/page.html", serve(html, "text/html"))
    for suffix, kind in (("js", "text/javascript"), ("css", "text/css")):
        path = bundles / f"{name}.{suffix}"
        if path.exists():
            page.route(f"{base}/test/{name}.{suffix}", serve(path.read_bytes(), kind))
    page.goto(f"{base}/test/page.html")
