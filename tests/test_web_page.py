"""The upload page in a real browser (Debian's Chromium driven by Playwright) against a real
`haul serve`, and the browser tus clients people embed: Uppy and tus-js-client."""

from __future__ import annotations

import hashlib
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, Route, expect

from haul.wire.tus import parse_metadata
from tests.browser import build_client_bundles, chromium, serve_test_page
from tests.helpers import (
    HaulServer,
    free_port,
    random_file,
    sha256_file,
    tls_files,
    wait_for,
    wait_until_still,
)
from tests.hook_receiver import HookReceiver
from tests.proxy import ChaosProxy

MiB = 1 << 20
OUTPUT = Path(__file__).resolve().parent.parent / "test-output"
DONE = ".card[data-state=done]"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    yield context
    context.close()


@pytest.fixture
def proxied(make_server: Callable[..., HaulServer]) -> Iterator[tuple[HaulServer, ChaosProxy]]:
    """A haul server and a counting, throttleable proxy in front of it; the page goes through
    the proxy, so what it counts is what the browser sent."""
    server = make_server()
    proxy = ChaosProxy(server.port).start()
    yield server, proxy
    proxy.stop()


def open_page(context: BrowserContext, url: str, errors: list[str] | None = None) -> Page:
    page = context.new_page()
    if errors is not None:
        page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url + "/")
    expect(page.locator("body[data-ready=true]")).to_have_count(1)
    return page


def card(page: Page, name: str) -> Locator:
    return page.locator(f".card[data-name='{name}']")


def uploaded_url(page: Page, name: str, nth: int = 0) -> str:
    link = page.locator(f".card[data-name='{name}'][data-state=done] a.download").nth(nth)
    return str(link.get_attribute("href"))


def download_sha256(url: str) -> str:
    import hashlib

    digest = hashlib.sha256()
    with httpx.stream("GET", url, timeout=120, trust_env=False) as response:
        assert response.status_code == 200
        for block in response.iter_bytes(MiB):
            digest.update(block)
    return digest.hexdigest()


def settle(proxy: ChaosProxy, quiet: float = 1.0) -> int:
    """Waits until nothing has passed the proxy for ``quiet`` seconds; returns the count then."""
    return wait_until_still(lambda: proxy.upstream_bytes, still_for=quiet, timeout=60)


def active_uploads(server: HaulServer) -> int:
    with sqlite3.connect(f"file:{server.data_dir / 'haul.db'}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT count(*) FROM uploads WHERE state = 'active'").fetchone()[0])


def test_page_uploads_300_mb_verifies_it_and_a_second_upload_is_instant(
    context: BrowserContext, proxied: tuple[HaulServer, ChaosProxy], tmp_path: Path
) -> None:
    server, proxy = proxied
    source = random_file(tmp_path / "big-video.bin", 300 * MiB, seed=5)
    errors: list[str] = []
    page = open_page(context, proxy.url, errors)
    page.set_input_files("#picker", str(source))
    expect(page.locator(DONE)).to_have_count(1, timeout=180_000)
    first = card(page, "big-video.bin")
    expect(first.locator(".message")).to_contain_text("SHA-256 verified by the server")
    cells = first.locator(".chunks i")
    assert cells.count() == 38  # 300 MiB in 8 MiB chunks
    expect(first.locator(".chunks i[data-state=verified]")).to_have_count(38)
    url = uploaded_url(page, "big-video.bin")
    assert download_sha256(url.replace(proxy.url, server.url)) == sha256_file(source)
    assert proxy.upstream_bytes >= source.stat().st_size
    # The page tags its chunks, so the server hashed most of the file while it arrived.
    assert server.log_path is not None
    ahead = re.search(
        r"(\d+) of 38 partials were hashed as they arrived", server.log_path.read_text()
    )
    assert ahead is not None
    assert int(ahead[1]) >= 30

    sent_before = proxy.upstream_bytes
    page.set_input_files("#picker", str(source))
    expect(page.locator(DONE)).to_have_count(2, timeout=60_000)
    second = page.locator(".card").first
    expect(second.locator(".badge")).to_have_text("instant")
    expect(second.locator(".message")).to_contain_text("already had this file")
    assert proxy.upstream_bytes - sent_before < 64 * 1024  # requests and a proof, no content
    expect(page.locator("#completed li")).to_have_count(2)
    expect(page.locator("#completed .tag")).to_have_text("instant")
    assert errors == []  # no script error on the page


def test_reload_mid_upload_then_reselecting_the_file_sends_only_the_rest(
    context: BrowserContext, proxied: tuple[HaulServer, ChaosProxy], tmp_path: Path
) -> None:
    server, proxy = proxied
    size = 96 * MiB
    source = random_file(tmp_path / "resumable.bin", size, seed=6)
    proxy.rate = 24 * MiB  # about four seconds for the whole file
    page = open_page(context, proxy.url)
    page.set_input_files("#picker", str(source))
    wait_for(lambda: proxy.upstream_bytes > size * 0.4, timeout=60)
    page.reload()
    expect(page.locator("body[data-ready=true]")).to_have_count(1)
    sent_before_reload = proxy.upstream_bytes
    assert sent_before_reload < size * 0.9  # really interrupted mid-upload

    listed = page.locator("#unfinished li[data-name='resumable.bin']")
    expect(listed).to_have_count(1)
    proxy.rate = None
    # The throttling proxy still holds bytes the browser pushed before the reload; let them
    # reach the server (as a network's buffers would) before the file is chosen again.
    settle(proxy)
    page.set_input_files("#picker", str(source))
    expect(page.locator(DONE)).to_have_count(1, timeout=120_000)
    expect(listed).to_have_count(0)  # cleaned up after success
    url = uploaded_url(page, "resumable.bin")
    assert download_sha256(url.replace(proxy.url, server.url)) == sha256_file(source)
    # Everything the browser sent over both page loads: the file once, plus headers (a restart
    # from zero would add the 40-90 % sent before the reload).
    assert proxy.upstream_bytes < size + 2 * MiB, proxy.upstream_bytes


def test_limits_are_checked_before_sending_and_server_refusals_are_shown_in_words(
    context: BrowserContext, make_server: Callable[..., HaulServer], tmp_path: Path
) -> None:
    server = make_server("--max-size", "5MB", "--allowed-types", ".txt,image/*")
    big = random_file(tmp_path / "notes.txt", 6_000_000)
    program = tmp_path / "tool.exe"
    program.write_bytes(b"MZ" + b"\0" * 1000)
    page = open_page(context, server.url)
    expect(page.locator("#limits")).to_contain_text("files up to 5.00 MB")
    page.set_input_files("#picker", [str(big), str(program)])
    expect(page.locator(".card[data-state=failed]")).to_have_count(2)
    expect(card(page, "notes.txt").locator(".message")).to_have_text(
        "notes.txt is 6.00 MB; this server accepts files up to 5.00 MB."
    )
    expect(card(page, "tool.exe").locator(".message")).to_contain_text(
        "not a kind of file this server accepts (only .txt, image/*)"
    )
    assert active_uploads(server) == 0  # nothing was sent

    # A page that does not know the limits: the server's own refusals, shown in words.
    def no_limits(route: Route) -> None:
        body = httpx.get(server.url + "/api/info", trust_env=False).json()
        body.update(max_size=None, allowed_types=[], denied_types=[])
        route.fulfill(json=body)

    page.route("**/api/info", no_limits)
    page.reload()
    expect(page.locator("body[data-ready=true]")).to_have_count(1)
    page.set_input_files("#picker", [str(big), str(program)])
    expect(page.locator(".card[data-state=failed]")).to_have_count(2, timeout=30_000)
    too_big = card(page, "notes.txt").locator(".message")
    expect(too_big).to_contain_text("5000000")
    expect(too_big).not_to_contain_text("ERR_")
    wrong_kind = card(page, "tool.exe").locator(".message")
    expect(wrong_kind).to_contain_text("is not an allowed kind of file")
    expect(wrong_kind).not_to_contain_text("415")
    assert active_uploads(server) == 0


def test_pause_resume_and_cancel(
    context: BrowserContext, proxied: tuple[HaulServer, ChaosProxy], tmp_path: Path
) -> None:
    server, proxy = proxied
    kept = random_file(tmp_path / "kept.bin", 48 * MiB, seed=7)
    dropped = random_file(tmp_path / "dropped.bin", 48 * MiB, seed=8)
    proxy.rate = 16 * MiB
    page = open_page(context, proxy.url)
    page.set_input_files("#picker", [str(kept), str(dropped)])
    wait_for(lambda: proxy.upstream_bytes > 8 * MiB, timeout=60)

    card(page, "dropped.bin").locator("button[data-action=cancel]").click()
    expect(card(page, "dropped.bin")).to_have_attribute("data-state", "cancelled")
    card(page, "kept.bin").locator("button[data-action=pause]").click()
    expect(card(page, "kept.bin")).to_have_attribute("data-state", "paused")
    # Bytes sent before the pause may still drain from socket buffers; then nothing moves.
    paused_at = settle(proxy)
    time.sleep(1.5)
    assert proxy.upstream_bytes - paused_at < 64 * 1024  # nothing but a straggling header
    assert paused_at < 2 * 48 * MiB

    proxy.rate = None
    card(page, "kept.bin").locator("button[data-action=resume]").click()
    expect(card(page, "kept.bin")).to_have_attribute("data-state", "done", timeout=60_000)
    url = uploaded_url(page, "kept.bin")
    assert download_sha256(url.replace(proxy.url, server.url)) == sha256_file(kept)
    # The cancelled file's uploads are deleted on the server, and the page forgot it.
    wait_for(lambda: active_uploads(server) == 0, timeout=10)
    expect(page.locator("#unfinished li")).to_have_count(0)


def test_going_offline_and_back_finishes_the_upload(
    context: BrowserContext, proxied: tuple[HaulServer, ChaosProxy], tmp_path: Path
) -> None:
    server, proxy = proxied
    source = random_file(tmp_path / "train.bin", 64 * MiB, seed=9)
    proxy.rate = 16 * MiB
    page = open_page(context, proxy.url)
    page.set_input_files("#picker", str(source))
    wait_for(lambda: proxy.upstream_bytes > 16 * MiB, timeout=60)
    context.set_offline(True)
    expect(page.locator("#offline")).to_be_visible()
    expect(card(page, "train.bin").locator(".badge")).to_have_text("offline")
    time.sleep(1)
    proxy.rate = None
    context.set_offline(False)
    expect(page.locator(DONE)).to_have_count(1, timeout=60_000)
    expect(page.locator("#offline")).to_be_hidden()
    url = uploaded_url(page, "train.bin")
    assert download_sha256(url.replace(proxy.url, server.url)) == sha256_file(source)


def test_dropped_files_upload(context: BrowserContext, server: HaulServer, tmp_path: Path) -> None:
    page = open_page(context, server.url)
    content = bytes(range(256)) * 4096  # 1 MiB
    transfer = page.evaluate_handle(
        """(bytes) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(bytes)], "dropped.dat"));
            return transfer;
        }""",
        list(content[:4096]),
    )
    page.dispatch_event("#drop", "dragover", {"dataTransfer": transfer})
    expect(page.locator("#drop.over")).to_have_count(1)
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    expect(page.locator(DONE)).to_have_count(1, timeout=30_000)
    url = uploaded_url(page, "dropped.dat")
    assert httpx.get(url, trust_env=False).content == content[:4096]


def test_connection_resets_are_retried_until_the_upload_matches(
    context: BrowserContext, proxied: tuple[HaulServer, ChaosProxy], tmp_path: Path
) -> None:
    server, proxy = proxied
    source = random_file(tmp_path / "bumpy.bin", 48 * MiB, seed=14)
    page = open_page(context, proxy.url)
    proxy.cut_probability = 0.01  # per forwarded piece: dozens of resets over the upload
    page.set_input_files("#picker", str(source))
    expect(page.locator(DONE)).to_have_count(1, timeout=120_000)
    assert proxy.cuts > 0
    url = uploaded_url(page, "bumpy.bin")
    assert download_sha256(url.replace(proxy.url, server.url)) == sha256_file(source)


@pytest.mark.parametrize("request_line", [b"Upload-Concat: final;", b"Upload-Concat: partial"])
def test_a_lost_answer_to_a_creation_is_retried_without_a_second_upload(
    context: BrowserContext,
    proxied: tuple[HaulServer, ChaosProxy],
    tmp_path: Path,
    request_line: bytes,
) -> None:
    server, proxy = proxied
    source = random_file(tmp_path / "joined.bin", 24 * MiB, seed=16)  # 3 chunks of 8 MiB
    proxy.lose_answer_to = request_line
    page = open_page(context, proxy.url)
    page.set_input_files("#picker", str(source))
    expect(page.locator(DONE)).to_have_count(1, timeout=60_000)
    assert proxy.answers_lost == 1
    assert proxy.upstream_bytes < source.stat().st_size + MiB  # no chunk was sent again
    assert server.log_path is not None
    log = server.log_path.read_text()
    assert log.count("created final upload") == 1
    assert log.count(f"length={8 * MiB}") == 3  # one partial upload per chunk, none twice
    if request_line.endswith(b"partial"):  # answered from its Idempotency-Key
        assert log.count("its creation was repeated") == 1
    url = uploaded_url(page, "joined.bin")
    assert download_sha256(url.replace(proxy.url, server.url)) == sha256_file(source)


def test_unfinished_entries_are_forgotten_once_the_server_expired_them(
    context: BrowserContext, make_server: Callable[..., HaulServer], tmp_path: Path
) -> None:
    server = make_server("--expiration", "2s", "--sweep-interval", "1s")
    proxy = ChaosProxy(server.port, rate=4 * MiB).start()
    try:
        source = random_file(tmp_path / "abandoned.bin", 32 * MiB, seed=15)
        page = open_page(context, proxy.url)
        page.set_input_files("#picker", str(source))
        wait_for(lambda: proxy.upstream_bytes > 4 * MiB, timeout=30)
        page.reload()
        expect(page.locator("#unfinished li[data-name='abandoned.bin']")).to_have_count(1)
        proxy.rate = None
        settle(proxy)  # the page no longer sends; the server expires the upload 2 s later
        time.sleep(3.5)

        def forgotten() -> bool:
            page.reload()
            expect(page.locator("body[data-ready=true]")).to_have_count(1)
            return page.locator("#unfinished li").count() == 0

        wait_for(forgotten, timeout=30, interval=1)  # each look is a fresh page load
    finally:
        proxy.stop()


def test_page_with_credentials_uploads_as_the_tokens_owner(
    context: BrowserContext, make_server: Callable[..., HaulServer], tmp_path: Path
) -> None:
    key = "page-user-0123456789abcdef"
    server = make_server("--api-keys", f"pat:{key}")
    source = random_file(tmp_path / "private.bin", 3 * MiB, seed=16)
    page = open_page(context, server.url)
    expect(page.locator("#auth")).to_be_visible()
    page.set_input_files("#picker", str(source))
    refused = page.locator(".card[data-state=failed] .message")
    expect(refused).to_have_text("This server needs an access token: enter it above, then retry.")
    page.fill("#token", key)
    page.locator("#token").dispatch_event("change")
    page.locator("button[data-action=retry]").click()
    expect(page.locator(DONE)).to_have_count(1, timeout=30_000)
    link = uploaded_url(page, "private.bin")
    assert "signature=" in link  # opens in a tab without the token
    with httpx.Client(trust_env=False) as client:
        assert client.get(link).content == source.read_bytes()
        plain = link.split("?")[0]
        assert client.get(plain).status_code == 401  # the upload itself is not public
        head = client.head(
            plain, headers={"Tus-Resumable": "1.0.0", "Authorization": f"Bearer {key}"}
        )
    assert head.status_code == 200
    # The token is kept for this tab only, unless asked to remember it.
    assert page.evaluate("sessionStorage.getItem('haul.token')") == key
    assert page.evaluate("localStorage.getItem('haul.token')") is None


def test_screenshot_mid_upload_shows_two_files_with_chunk_maps(
    context: BrowserContext, proxied: tuple[HaulServer, ChaosProxy], tmp_path: Path
) -> None:
    _, proxy = proxied
    one = random_file(tmp_path / "holiday-4k.mov", 200 * MiB, seed=10)
    two = random_file(tmp_path / "dataset.tar", 120 * MiB, seed=11)
    proxy.rate = 40 * MiB
    page = open_page(context, proxy.url)
    page.set_input_files("#picker", [str(one), str(two)])
    wait_for(lambda: proxy.upstream_bytes > 90 * MiB, timeout=60)
    # Chunks the server has stored are verified already: each PATCH carried its checksum.
    expect(page.locator(".chunks i[data-state=verified]").first).to_be_visible()
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "web-page.png"), full_page=True)
    assert page.locator(".card").count() == 2
    assert page.locator(".chunks i").count() == 25 + 15
    assert (OUTPUT / "web-page.png").stat().st_size > 10_000
    proxy.rate = None
    expect(page.locator(DONE)).to_have_count(2, timeout=60_000)


def test_page_is_served_with_a_strict_content_security_policy(server: HaulServer) -> None:
    with httpx.Client(trust_env=False) as client:
        page = client.get(server.url + "/")
        script = client.get(server.url + "/ui/main.js")
        info = client.get(server.url + "/api/info").json()
    assert page.status_code == 200
    assert "<title>haul" in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self' 'wasm-unsafe-eval'" in csp
    assert "unsafe-inline" not in csp
    assert "<script>" not in page.text
    assert " style=" not in page.text
    assert script.status_code == 200
    assert script.headers["x-content-type-options"] == "nosniff"
    assert script.headers["content-type"].startswith("text/javascript")
    assert info["tus"]["endpoint"] == "/files/"
    assert "concatenation" in info["tus"]["extensions"]


# -- other browser clients ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def client_bundles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_client_bundles(tmp_path_factory.mktemp("bundles"))


def test_uppy_dashboard_with_tus_uploads_to_haul(
    context: BrowserContext, server: HaulServer, client_bundles: Path, tmp_path: Path
) -> None:
    source = random_file(tmp_path / "from-uppy.bin", 40 * MiB, seed=12)
    page = context.new_page()
    serve_test_page(page, server.url, client_bundles, "uppy", '<div id="uppy"></div>')
    page.set_input_files(".uppy-Dashboard-input >> nth=0", str(source))
    page.locator(".uppy-StatusBar-actionBtn--upload").click()
    expect(page.locator("body[data-done=true]")).to_have_count(1, timeout=120_000)
    result = page.evaluate("window.result")
    assert result["failed"] == []
    [url] = result["successful"]
    assert download_sha256(url) == sha256_file(source)
    with httpx.Client(trust_env=False) as client:
        head = client.head(url, headers={"Tus-Resumable": "1.0.0"})
    metadata = parse_metadata(head.headers["upload-metadata"])
    assert metadata["filename"] == b"from-uppy.bin"


def test_tus_js_client_parallel_uploads_in_the_browser(
    context: BrowserContext, server: HaulServer, client_bundles: Path, tmp_path: Path
) -> None:
    source = random_file(tmp_path / "from-tus-js.bin", 40 * MiB, seed=13)
    page = context.new_page()
    serve_test_page(
        page, server.url, client_bundles, "tus-parallel", '<input id="file" type="file">'
    )
    page.set_input_files("#file", str(source))
    expect(page.locator("body[data-url]")).to_have_count(1, timeout=120_000)
    assert page.locator("body").get_attribute("data-error") is None
    url = str(page.locator("body").get_attribute("data-url"))
    assert download_sha256(url) == sha256_file(source)
    assert server.log_path is not None
    assert "from 4 partials" in server.log_path.read_text()  # it really went in parallel


def test_page_uploads_over_https_with_http2(browser: Browser, tmp_path: Path) -> None:
    chain, key, ca_file = tls_files(tmp_path)
    tls = ["--tls-cert", str(chain), "--tls-key", str(key)]
    server = HaulServer(data_dir=tmp_path / "tls-data", ca_file=ca_file, extra=tls).start()
    context = browser.new_context(ignore_https_errors=True)  # a throwaway CA
    try:
        source = random_file(tmp_path / "secure.bin", 40 * MiB, seed=17)  # 5 chunks
        page = open_page(context, server.url)
        page.set_input_files("#picker", str(source))
        expect(page.locator(DONE)).to_have_count(1, timeout=120_000)
        protocols = page.evaluate(
            "performance.getEntriesByType('resource').map((entry) => entry.nextHopProtocol)"
        )
        assert "h2" in protocols, protocols  # Chromium chose HTTP/2 by ALPN
        url = uploaded_url(page, "secure.bin")
        with httpx.Client(verify=server.tls_context(), trust_env=False) as client:
            body = client.get(url).content
        assert hashlib.sha256(body).hexdigest() == sha256_file(source)
    finally:
        context.close()
        server.stop()


def test_a_hooks_refusal_is_shown_in_the_page(
    context: BrowserContext, make_server: Callable[..., HaulServer], tmp_path: Path
) -> None:
    receiver = HookReceiver(free_port(), tmp_path / "received.jsonl").start()
    try:
        server = make_server("--hook-url", receiver.url)
        refusal = {"reject": {"status": 403, "message": "uploads are closed for maintenance"}}
        receiver.control(answers={"pre-create": refusal})
        page = open_page(context, server.url)
        page.set_input_files("#picker", [str(random_file(tmp_path / "refused.bin", 300_000))])
        message = card(page, "refused.bin").locator(".message")
        expect(page.locator(".card[data-state=failed]")).to_have_count(1, timeout=30_000)
        expect(message).to_have_text("Uploads are closed for maintenance.")
        assert active_uploads(server) == 0
        assert {e["type"] for e in receiver.delivered()} == {"pre-create"}
    finally:
        receiver.stop()
