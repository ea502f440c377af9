"""Every chunk the upload page and `haul upload` send carries a tus `Upload-Checksum`: a chunk
damaged on the way (a proxy flips one byte of one PATCH body) is refused with 460 and sent again
alone, and the file arrives intact. Real `haul serve`, real Chromium, the real CLI."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, expect

from tests.browser import chromium
from tests.helpers import HAUL, HaulServer, env_without_proxy, random_file, sha256_file
from tests.proxy import ChaosProxy
from tests.test_web_page import DONE, card, download_sha256, open_page, uploaded_url

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


@pytest.fixture
def logged(make_server: Callable[..., HaulServer]) -> Iterator[tuple[HaulServer, ChaosProxy]]:
    """A server writing one JSON line per request, behind a proxy that can damage a PATCH."""
    server = make_server("--log-format", "json", "--access-log")
    proxy = ChaosProxy(server.port).start()
    proxy.record_patches = True
    yield server, proxy
    proxy.stop()


def patch_answers(server: HaulServer) -> list[tuple[str, int]]:
    """(path, status) of every PATCH with bytes the server answered, in order (an empty PATCH,
    such as a digest declared to a final upload, carries no chunk)."""
    assert server.log_path is not None
    answers = []
    for line in server.log_path.read_text().splitlines():
        entry = json.loads(line) if line.startswith("{") else {}
        if entry.get("message", "").startswith("PATCH ") and entry["bytes_received"] > 0:
            answers.append((entry["message"].split()[1], int(entry["status"])))
    return answers


def checksums(proxy: ChaosProxy) -> list[str]:
    """The Upload-Checksum algorithm of each PATCH with a body that went through ('' when it
    had none)."""
    found = []
    for head in proxy.patch_heads:
        fields = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, rest = line.partition(b":")
            fields[name.strip().lower()] = rest.strip().decode()
        if int(fields.get(b"content-length", "0")) > 0:
            found.append(fields.get(b"upload-checksum", "").split(" ")[0])
    return found


def assert_resent_alone(answers: list[tuple[str, int]], pieces: int) -> None:
    """One PATCH refused as damaged, followed (on that upload) by the one that replaced it."""
    refused = [i for i, (_, status) in enumerate(answers) if status == 460]
    assert len(refused) == 1, answers
    assert [status for _, status in answers].count(204) == pieces, answers
    path = answers[refused[0]][0]
    assert any(p == path and s == 204 for p, s in answers[refused[0] + 1 :]), answers


def test_the_page_checksums_every_chunk_and_a_damaged_one_is_sent_again_alone(
    context: BrowserContext, logged: tuple[HaulServer, ChaosProxy], tmp_path: Path
) -> None:
    server, proxy = logged
    size = 24 * MiB  # 3 chunks of 8 MiB, each sent as PATCHes of at most 4 MiB
    source = random_file(tmp_path / "fragile.bin", size, seed=31)
    proxy.corrupt_patch = True
    errors: list[str] = []
    page = open_page(context, proxy.url, errors)
    page.set_input_files("#picker", str(source))
    expect(page.locator(DONE)).to_have_count(1, timeout=120_000)
    assert proxy.corrupted == 1

    assert_resent_alone(patch_answers(server), pieces=6)
    # The cheapest algorithm haul offers, on every PATCH, including the one sent again.
    assert checksums(proxy) == ["crc32"] * 7
    # The file once, the damaged piece (4 MiB) once more, and the requests' heads.
    assert size + 4 * MiB <= proxy.upstream_bytes < size + 5 * MiB
    url = uploaded_url(page, "fragile.bin")
    assert download_sha256(url.replace(proxy.url, server.url)) == sha256_file(source)
    expect(card(page, "fragile.bin").locator(".chunks i[data-state=verified]")).to_have_count(3)
    # The checksums were computed off the main thread, by the worker that stays for them.
    assert any(worker.url.endswith("hash.worker.js") for worker in page.workers)
    assert errors == []


def test_chunks_are_verified_as_they_are_stored_not_only_at_the_end(
    context: BrowserContext, logged: tuple[HaulServer, ChaosProxy], tmp_path: Path
) -> None:
    _, proxy = logged
    source = random_file(tmp_path / "slow.bin", 32 * MiB, seed=32)
    proxy.rate = 8 * MiB  # about four seconds, one chunk at a time: three wait while one goes
    page = open_page(context, proxy.url)
    page.select_option("#concurrency", "1")
    page.set_input_files("#picker", str(source))
    verified = card(page, "slow.bin").locator(".chunks i[data-state=verified]")
    expect(verified.first).to_be_visible(timeout=60_000)
    assert card(page, "slow.bin").get_attribute("data-state") == "uploading"
    assert card(page, "slow.bin").locator(".chunks i[data-state=waiting]").count() >= 1
    proxy.rate = None
    expect(page.locator(DONE)).to_have_count(1, timeout=120_000)
    expect(verified).to_have_count(4)
    assert set(checksums(proxy)) == {"crc32"}


def test_haul_upload_checksums_every_patch_and_sends_a_damaged_one_again(
    logged: tuple[HaulServer, ChaosProxy], tmp_path: Path
) -> None:
    server, proxy = logged
    size = 12 * MiB
    source = random_file(tmp_path / "cli.bin", size, seed=33)
    proxy.corrupt_patch = True
    env = {**env_without_proxy(), "HAUL_STATE_DIR": str(tmp_path / "state")}
    command = [HAUL, "upload", str(source), "--server", proxy.url, "--chunk-size", "2MiB",
               "--parallel", "2", "--json"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    (result,) = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert proxy.corrupted == 1
    assert_resent_alone(patch_answers(server), pieces=6)
    sent = checksums(proxy)
    assert len(sent) == 7  # six chunks and the one sent again
    assert set(sent) == {"crc32"}, sent  # each with a checksum: the cheapest haul offers
    assert size + 2 * MiB <= proxy.upstream_bytes < size + 3 * MiB
    assert download_sha256(result["url"].replace(proxy.url, server.url)) == sha256_file(source)
