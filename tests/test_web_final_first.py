"""The page creates the final upload before any chunk's bytes are sent (so an S3 store can write
the partials straight into the final object), in chunks of a multiple of 8 MiB. Without instant
upload it hashes the file while the chunks travel and declares the digest to the final upload
once known (an empty PATCH with Repr-Digest), which the server verifies. Real Chromium, a real
`haul serve` logging every request."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, expect

from tests.browser import chromium
from tests.helpers import HaulServer, random_file, sha256_file, wait_for
from tests.proxy import ChaosProxy
from tests.test_web_page import DONE, card, download_sha256, open_page, settle, uploaded_url

MiB = 1 << 20


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    yield context
    context.close()


def requests(server: HaulServer) -> list[tuple[str, str, int]]:
    """(method, path, status) of every request the server answered, in order."""
    assert server.log_path is not None
    found = []
    for line in server.log_path.read_text().splitlines():
        entry = json.loads(line) if line.startswith("{") else {}
        if "status" in entry and entry.get("message", "").split(" ")[0].isupper():
            method, path, _ = entry["message"].split(" ", 2)
            found.append((method, path, int(entry["status"])))
    return found


def refusals(server: HaulServer, method: str, path: str) -> list[str]:
    """The error codes of the requests to ``path`` the server refused, in order."""
    assert server.log_path is not None
    lines = [json.loads(line) for line in server.log_path.read_text().splitlines()
             if line.startswith("{")]  # fmt: skip
    return [entry["error_code"] for entry in lines if "error_code" in entry
            and entry["message"].startswith(f"{method} {path} ")]  # fmt: skip


def upload_through_the_page(
    context: BrowserContext, server: HaulServer, source: Path
) -> tuple[str, list[tuple[str, str, int]]]:
    errors: list[str] = []
    page = open_page(context, server.url, errors)
    page.set_input_files("#picker", str(source))
    expect(page.locator(DONE)).to_have_count(1, timeout=120_000)
    message = card(page, source.name).locator(".message")
    expect(message).to_contain_text("SHA-256 verified by the server")
    url = uploaded_url(page, source.name)
    assert download_sha256(url) == sha256_file(source)
    assert errors == []
    return httpx.URL(url).path, requests(server)


def assert_final_before_bytes(
    log: list[tuple[str, str, int]], final: str, chunks: int, probes: int
) -> None:
    created = [i for i, (m, _, s) in enumerate(log) if m == "POST" and s == 201]
    first_byte = next(i for i, (m, p, _) in enumerate(log) if m == "PATCH" and p != final)
    # The instant-upload probe (when offered), a partial per chunk, and the final.
    assert len(created) == probes + chunks + 1, log
    assert all(i < first_byte for i in created), log


def test_the_final_upload_is_made_before_the_bytes_and_declared_with_its_creation(
    context: BrowserContext, make_server: Callable[..., HaulServer], tmp_path: Path
) -> None:
    server = make_server("--log-format", "json", "--access-log")
    source = random_file(tmp_path / "ordered.bin", 40 * MiB, seed=41)
    final, log = upload_through_the_page(context, server, source)
    assert_final_before_bytes(log, final, chunks=5, probes=1)  # 40 MiB in chunks of 8 MiB
    assert not [entry for entry in log if entry[:2] == ("PATCH", final)]  # digest went at creation


def test_without_instant_upload_the_file_is_hashed_alongside_and_the_digest_declared_later(
    context: BrowserContext, make_server: Callable[..., HaulServer], tmp_path: Path
) -> None:
    server = make_server("--log-format", "json", "--access-log", "--no-instant-upload")
    source = random_file(tmp_path / "alongside.bin", 40 * MiB, seed=42)
    final, log = upload_through_the_page(context, server, source)
    assert_final_before_bytes(log, final, chunks=5, probes=0)
    declared = [status for method, path, status in log if (method, path) == ("PATCH", final)]
    # The digest, declared once, in an empty PATCH at the offset HEAD reported. The assembly may
    # finish between that HEAD and the PATCH: then the one refusal is the offset's, and the
    # retry at the new offset is taken.
    assert declared in ([204], [409, 204]), log
    assert refusals(server, "PATCH", final) in ([], ["ERR_MISMATCHED_OFFSET"])
    head = httpx.head(server.url + final, headers={"Tus-Resumable": "1.0.0"}, trust_env=False)
    digest = base64.b64encode(bytes.fromhex(sha256_file(source))).decode()
    assert head.headers["repr-digest"] == f"sha-256=:{digest}:"


def test_on_s3_the_page_uploads_final_first_with_checksummed_chunks(
    context: BrowserContext, make_server: Callable[..., HaulServer], rgw: str, s3_bucket: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    from tests.test_s3_server import bucket_listing, s3_options

    server = make_server("--log-format", "json", "--access-log", *s3_options(rgw, s3_bucket))
    source = random_file(tmp_path / "on-s3.bin", 24 * MiB, seed=43)
    final, log = upload_through_the_page(context, server, source)
    assert_final_before_bytes(log, final, chunks=3, probes=1)
    assert {status for method, _, status in log if method == "PATCH"} == {204}
    _, unfinished = bucket_listing(rgw, s3_bucket)
    assert unfinished == []  # every multipart upload was completed


def test_a_reload_while_hashing_alongside_resumes_into_the_same_final_upload(
    context: BrowserContext, make_server: Callable[..., HaulServer], tmp_path: Path
) -> None:
    server = make_server("--log-format", "json", "--access-log", "--no-instant-upload")
    proxy = ChaosProxy(server.port, rate=16 * MiB).start()  # about three seconds for the file
    try:
        size = 48 * MiB
        source = random_file(tmp_path / "reloaded.bin", size, seed=44)
        page = open_page(context, proxy.url)
        page.set_input_files("#picker", str(source))
        wait_for(lambda: proxy.upstream_bytes > size * 0.3, timeout=60)
        page.reload()
        expect(page.locator("body[data-ready=true]")).to_have_count(1)
        assert proxy.upstream_bytes < size * 0.9  # really interrupted mid-upload
        proxy.rate = None
        settle(proxy)
        page.set_input_files("#picker", str(source))
        expect(page.locator(DONE)).to_have_count(1, timeout=120_000)
        expect(card(page, source.name).locator(".message")).to_contain_text(
            "SHA-256 verified by the server"
        )
        url = uploaded_url(page, source.name)
        assert download_sha256(url.replace(proxy.url, server.url)) == sha256_file(source)
        assert proxy.upstream_bytes < size + 8 * MiB  # the rest, not the file again
        final = httpx.URL(url).path
        declared = [s for m, p, s in requests(server) if (m, p) == ("PATCH", final)]
        # The digest, once known, to the final (again after the reload: the same one is 204).
        assert 204 in declared
        # Refused only if the reload cut it off (the page never saw that answer).
        refused = refusals(server, "PATCH", final)
        assert set(refused) <= {"ERR_REQUEST_INTERRUPTED"}
        assert len(declared) == declared.count(204) + len(refused)
        assert server.log_path is not None
        made = server.log_path.read_text().count("created final upload")
        assert made == 1  # made before the reload, found again after it
    finally:
        proxy.stop()
