"""flow.js and Resumable.js from npm, unchanged, in Chromium against a real `haul serve`: an
upload, a reload mid-upload that resumes (the test GETs find the chunks held), and the same
file again, which sends nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Request, Route, expect

from tests.browser import build_client_bundles, chromium, serve_test_page
from tests.helpers import HaulServer, random_file

MiB = 1 << 20


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as running:
        yield running


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context()
    yield context
    context.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HaulServer]:
    running = HaulServer(data_dir=tmp_path_factory.mktemp("flow") / "data").start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_client_bundles(tmp_path_factory.mktemp("bundles"))


def open_uploader(
    context: BrowserContext, server: HaulServer, bundles: Path, lib: str, method: str
) -> Page:
    page = context.new_page()
    field = f'<input id="file" type="file" data-lib="{lib}" data-method="{method}">'
    serve_test_page(page, server.url, bundles, "chunk-libraries", field)
    return page


def download(url: str) -> bytes:
    return httpx.get(url, trust_env=False).content


def number_of(request: Request) -> int:
    return int(parse_qs(urlsplit(request.url).query)["flowChunkNumber"][0])


def chunk_posts(page: Page) -> list[int]:
    """The chunk numbers the page POSTs (method "octet": they are in the query)."""
    posted: list[int] = []

    def heard(request: Request) -> None:
        if request.method == "POST" and urlsplit(request.url).path == "/flow":
            posted.append(number_of(request))

    page.on("request", heard)
    return posted


def test_flow_js_resumes_after_a_reload_and_the_same_file_again_sends_nothing(
    context: BrowserContext, server: HaulServer, bundles: Path, tmp_path: Path
) -> None:
    source = random_file(tmp_path / "flow.bin", 12 * MiB + 345, seed=31)  # 12 chunks
    page = open_uploader(context, server, bundles, "flow", "octet")
    through: list[int] = []  # the chunks let through before the reload
    held: list[Route] = []  # the rest: never answered (an error would make flow.js abort all)

    def first_three(route: Route) -> None:
        if route.request.method == "POST" and len(through) == 3:
            held.append(route)
            return
        if route.request.method == "POST":
            through.append(number_of(route.request))
        route.continue_()

    page.route(f"{server.url}/flow?*", first_three)
    answered: list[int] = []
    page.on("requestfinished", lambda r: answered.append(1) if r.method == "POST" else None)
    page.set_input_files("#file", str(source))
    while len(answered) < 3:
        page.wait_for_event("requestfinished", timeout=60_000)
    page.reload()  # mid-upload: what was held in flight is cut off
    page.unroute(f"{server.url}/flow?*")
    posted = chunk_posts(page)
    page.set_input_files("#file", str(source))
    expect(page.locator("body[data-url]")).to_have_count(1, timeout=120_000)
    assert page.locator("body").get_attribute("data-error") is None
    assert sorted(posted) == sorted(set(range(1, 13)) - set(through)), (through, posted)
    url = str(page.locator("body").get_attribute("data-url"))
    assert download(url) == source.read_bytes()

    page.reload()  # the same file again: every test GET answers 200
    posted_again = chunk_posts(page)
    page.set_input_files("#file", str(source))
    expect(page.locator("body[data-done=true]")).to_have_count(1, timeout=60_000)
    assert posted_again == []


@pytest.mark.parametrize("lib", ["resumable", "flow"])
def test_multipart_chunks_from_the_library_make_one_upload(
    lib: str, context: BrowserContext, server: HaulServer, bundles: Path, tmp_path: Path
) -> None:
    source = random_file(tmp_path / f"{lib}.bin", 5 * MiB + 999_999, seed=len(lib))
    page = open_uploader(context, server, bundles, lib, "multipart")
    page.set_input_files("#file", str(source))
    expect(page.locator("body[data-url]")).to_have_count(1, timeout=120_000)
    assert page.locator("body").get_attribute("data-error") is None
    url = str(page.locator("body").get_attribute("data-url"))
    assert download(url) == source.read_bytes()
