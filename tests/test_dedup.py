"""Instant upload (秒传) and shared storage: a declared digest the owner already stored
completes at once, with no body bytes; knowing a digest alone never grants content."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from pathlib import Path

import httpx
import pytest

import haul
from tests.helpers import (
    HAUL,
    JS_DIR,
    TUS,
    env_without_proxy,
    head,
    random_file,
    sha256_file,
)
from tests.proxy import ChaosProxy

MiB = 1 << 20


def _repr(digest_hex: str) -> str:
    return f"sha-256=:{base64.b64encode(bytes.fromhex(digest_hex)).decode()}:"


def _stored_inodes(server, url: str) -> set[int]:
    upload_id = url.rsplit("/", 1)[1]
    parts = server.data_dir / "uploads" / f"{upload_id}.parts"
    files = sorted(parts.iterdir()) if parts.is_dir() else [server.data_dir / "uploads" / upload_id]
    return {f.stat().st_ino for f in files}


@pytest.mark.parametrize("parallel", [1, 4])
def test_second_upload_of_200mb_stops_once_its_hash_finds_it_on_the_server(
    make_server, tmp_path: Path, parallel: int
) -> None:
    """The client sends at once and hashes alongside; when the hash is ready the server turns
    out to hold the content: the transfer stops, the partly sent upload is removed, and the
    upload completes as an instant upload. A link capped at 5 MB/s per connection keeps the
    transfer far behind the hash."""
    server = make_server("--anonymous-dedup")
    size = 200 * MiB
    source = random_file(tmp_path / "big.bin", size, seed=41)
    client = haul.Client(server.url, state_dir=tmp_path / "state", parallel=parallel)
    first = client.upload(source)
    assert first.instant is False
    proxy = ChaosProxy(server.port, rate=5_000_000).start()
    try:
        slow = haul.Client(proxy.url, state_dir=tmp_path / "state", parallel=parallel)
        second = slow.upload(source)
        received = proxy.upstream_bytes
    finally:
        proxy.stop()
    assert second.instant is True
    assert 0 < second.sent < size // 2  # sending had begun, and stopped long before the end
    assert received < size // 2, received
    assert second.sha256 == sha256_file(source)
    second_url = second.url.replace(str(proxy.port), str(server.port))
    with httpx.Client(trust_env=False, timeout=60) as c:
        assert c.head(second_url, headers=TUS).headers["upload-offset"] == str(size)
        download = c.get(second_url)
    assert hashlib.sha256(download.content).hexdigest() == sha256_file(source)
    # Stored once: the second upload's bytes are the first one's, not a copy.
    assert _stored_inodes(server, second_url) == _stored_inodes(server, first.url)
    # What was sent before the stop is removed: only the two uploads hold bytes.
    kept = {first.url.rsplit("/", 1)[1], second_url.rsplit("/", 1)[1]}
    stored = {p.name.split(".")[0] for p in (server.data_dir / "uploads").iterdir()}
    assert stored == kept


def test_deleting_one_copy_keeps_the_other(make_server, tmp_path: Path) -> None:
    server = make_server("--anonymous-dedup")
    source = random_file(tmp_path / "f.bin", 3 * MiB, seed=42)
    client = haul.Client(server.url, state_dir=tmp_path / "state", parallel=1)
    first = client.upload(source)
    second = client.upload(source)
    assert second.instant
    client.delete(first.url)
    third = client.upload(source)  # the content is still known through the second upload
    assert third.instant
    client.delete(second.url)
    with httpx.Client(trust_env=False) as c:
        assert hashlib.sha256(c.get(third.url).content).hexdigest() == sha256_file(source)


def test_knowing_the_digest_grants_nothing_by_default(server, client, tmp_path: Path) -> None:
    source = random_file(tmp_path / "secret.bin", 2 * MiB, seed=43)
    digest = sha256_file(source)
    haul.Client(server.url, state_dir=tmp_path / "state").upload(source)
    # Another (anonymous) client that only knows the digest and size:
    attempt = client.post(server.endpoint, headers={
        **TUS, "Upload-Length": str(2 * MiB), "Repr-Digest": _repr(digest)})  # fmt: skip
    assert attempt.status_code == 201
    assert attempt.headers["upload-offset"] == "0"  # an ordinary, empty upload
    url = attempt.headers["location"]
    assert client.get(url).status_code == 409  # nothing to download
    assert head(client, url).headers["upload-offset"] == "0"


def test_a_different_length_is_not_the_same_content(make_server, client, tmp_path) -> None:
    server = make_server("--anonymous-dedup")
    source = random_file(tmp_path / "f.bin", MiB, seed=44)
    haul.Client(server.url, state_dir=tmp_path / "state").upload(source)
    headers = {**TUS, "Upload-Length": str(MiB + 1), "Repr-Digest": _repr(sha256_file(source))}
    attempt = client.post(server.endpoint, headers=headers)
    assert attempt.headers["upload-offset"] == "0"


def test_cli_says_already_on_server_and_no_dedup_sends_everything(make_server, tmp_path) -> None:
    server = make_server("--anonymous-dedup")
    source = random_file(tmp_path / "f.bin", 5 * MiB, seed=45)
    env = {**env_without_proxy(), "HAUL_STATE_DIR": str(tmp_path / "state")}

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([HAUL, "upload", str(source), "--server", server.url, *extra],
                              capture_output=True, text=True, env=env, timeout=120)  # fmt: skip

    assert run().returncode == 0
    shown = run()
    assert shown.returncode == 0
    assert "already on server" in shown.stderr
    as_json = json.loads(run("--json").stdout)
    assert as_json["instant"] is True
    assert as_json["sent"] == 0
    skipped = json.loads(run("--json", "--no-dedup").stdout)
    assert skipped["instant"] is False
    assert skipped["sent"] == 5 * MiB


def test_tus_js_client_with_sha256_metadata_gets_an_instant_upload(make_server, tmp_path) -> None:
    server = make_server("--anonymous-dedup")
    source = random_file(tmp_path / "f.bin", 4 * MiB, seed=46)
    digest = sha256_file(source)
    haul.Client(server.url, state_dir=tmp_path / "state").upload(source)
    options = {"file": str(source), "endpoint": server.endpoint,
               "metadata": {"filename": "f.bin", "sha256": digest}}  # fmt: skip
    command = ["node", str(JS_DIR / "tus_upload.mjs"), json.dumps(options)]
    out = subprocess.run(command, capture_output=True, text=True, env=env_without_proxy(),
                         timeout=120)  # fmt: skip
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert "url" in lines[-1], lines[-1]
    with httpx.Client(trust_env=False) as c:
        assert hashlib.sha256(c.get(lines[-1]["url"]).content).hexdigest() == digest


# -- proof of possession: content stored by someone else ---------------------------------------


def test_another_client_that_holds_the_bytes_proves_it_and_gets_an_instant_upload(
    server, tmp_path: Path
) -> None:
    size = 64 * MiB
    source = random_file(tmp_path / "shared.bin", size, seed=47)
    haul.Client(server.url, state_dir=tmp_path / "alice").upload(source)
    # 2 MB/s per connection: the file's hash is ready long before its bytes are across.
    proxy = ChaosProxy(server.port, rate=2_000_000).start()
    try:
        result = haul.Client(proxy.url, state_dir=tmp_path / "bob").upload(source)
        received = proxy.upstream_bytes
    finally:
        proxy.stop()
    assert result.instant is True
    # The proof went over and the transfer under way stopped: most of the file never did.
    assert received < size // 2, received
    assert result.sent < size // 2
    url = result.url.replace(str(proxy.port), str(server.port))
    with httpx.Client(trust_env=False, timeout=60) as c:
        assert hashlib.sha256(c.get(url).content).hexdigest() == sha256_file(source)


def _challenge(client: httpx.Client, server, length: int, digest: str) -> tuple[str, str]:
    created = client.post(server.endpoint, headers={
        **TUS, "Upload-Length": str(length), "Repr-Digest": _repr(digest)})  # fmt: skip
    assert created.status_code == 201
    assert created.headers["upload-offset"] == "0"
    return created.headers["location"], created.headers["haul-challenge"]


def _prove(client: httpx.Client, url: str, proof: bytes) -> httpx.Response:
    return client.patch(url, headers={
        **TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream",
        "Haul-Proof": base64.b64encode(proof).decode()})  # fmt: skip


def test_a_client_that_knows_only_the_digest_gets_nothing(server, client, tmp_path) -> None:
    from haul.wire.possession import Challenge, answer

    source = random_file(tmp_path / "secret.bin", 8 * MiB, seed=48)
    haul.Client(server.url, state_dir=tmp_path / "owner").upload(source)
    url, header = _challenge(client, server, 8 * MiB, sha256_file(source))
    challenge = Challenge.parse_header(header)
    assert len(challenge.ranges) == 8
    guessed = answer(challenge.nonce, [b"\0" * (b - a + 1) for a, b in challenge.ranges])
    refused = _prove(client, url, guessed)
    assert refused.status_code == 403
    assert refused.text.startswith("ERR_PROOF_REJECTED: ")
    # One answer per challenge: even the right one is refused now.
    data = source.read_bytes()
    right = answer(challenge.nonce, [data[a : b + 1] for a, b in challenge.ranges])
    assert _prove(client, url, right).status_code == 403
    assert head(client, url).headers["upload-offset"] == "0"
    assert client.get(url).status_code == 409  # nothing to download
    # A fresh challenge names other ranges and another nonce: old answers are worthless.
    url2, header2 = _challenge(client, server, 8 * MiB, sha256_file(source))
    assert Challenge.parse_header(header2).nonce != challenge.nonce
    assert _prove(client, url2, right).status_code == 403


def test_a_small_file_must_be_proven_whole(server, client, tmp_path) -> None:
    from haul.wire.possession import Challenge, answer

    source = random_file(tmp_path / "small.bin", 1000, seed=49)
    haul.Client(server.url, state_dir=tmp_path / "owner").upload(source)
    url, header = _challenge(client, server, 1000, sha256_file(source))
    challenge = Challenge.parse_header(header)
    assert challenge.ranges == ((0, 999),)
    accepted = _prove(client, url, answer(challenge.nonce, [source.read_bytes()]))
    assert accepted.status_code == 204
    assert accepted.headers["upload-offset"] == "1000"
    assert client.get(url).content == source.read_bytes()


def test_proof_dedup_can_be_switched_off(make_server, client, tmp_path) -> None:
    server = make_server("--no-proof-dedup")
    source = random_file(tmp_path / "f.bin", 1000, seed=50)
    haul.Client(server.url, state_dir=tmp_path / "owner").upload(source)
    created = client.post(server.endpoint, headers={
        **TUS, "Upload-Length": "1000", "Repr-Digest": _repr(sha256_file(source))})  # fmt: skip
    assert "haul-challenge" not in created.headers
    result = haul.Client(server.url, state_dir=tmp_path / "other").upload(source)
    assert result.instant is False
    assert result.sent == 1000


# -- shared bytes under deletion and garbage collection ----------------------------------------


def test_deleting_the_original_while_instant_uploads_race_it(make_server, tmp_path) -> None:
    import threading

    server = make_server("--anonymous-dedup")
    source = random_file(tmp_path / "f.bin", 2 * MiB, seed=51)
    digest = sha256_file(source)
    client = haul.Client(server.url, state_dir=tmp_path / "s", parallel=1)
    originals = [client.upload(source, dedup=False).url for _ in range(3)]
    completed: list[str] = []
    answers: list[tuple[int, str | None]] = []  # every creation's status and offset

    def copier() -> None:
        with httpx.Client(trust_env=False, timeout=30) as c:
            for _ in range(30):
                headers = {**TUS, "Upload-Length": str(2 * MiB), "Repr-Digest": _repr(digest)}
                created = c.post(server.endpoint, headers=headers)
                answers.append((created.status_code, created.headers.get("upload-offset")))
                if created.headers.get("upload-offset") == str(2 * MiB):
                    completed.append(created.headers["location"])
                    copying.set()

    copying = threading.Event()
    threads = [threading.Thread(target=copier) for _ in range(3)]
    for thread in threads:
        thread.start()
    assert copying.wait(30)  # the deletions below race copies under way, not before them
    with httpx.Client(trust_env=False, timeout=30) as c:
        for url in originals:
            assert c.delete(url, headers=TUS).status_code == 204
    for thread in threads:
        thread.join()
    assert len(answers) == 3 * 30  # no copier died on the way
    # Each creation either completed at once or, once no copy was left, started empty.
    unexpected = [a for a in answers if a not in ((201, str(2 * MiB)), (201, "0"))]
    assert not unexpected, unexpected
    assert completed
    with httpx.Client(trust_env=False, timeout=30) as c:
        for url in completed:  # every upload that was answered complete is complete
            assert hashlib.sha256(c.get(url).content).hexdigest() == digest


def test_kill_9_during_gc_loses_nothing(make_server, tmp_path) -> None:
    import os
    import signal
    import time

    server = make_server("--anonymous-dedup", "--expiration", "1s", "--sweep-interval", "0")
    keep = random_file(tmp_path / "keep.bin", MiB, seed=52)
    client = haul.Client(server.url, state_dir=tmp_path / "s", parallel=1)
    kept = [client.upload(keep, dedup=i > 0).url for i in range(5)]  # 1 stored + 4 instant copies
    with httpx.Client(trust_env=False) as c:
        new = {**TUS, "Upload-Length": "100"}
        # Enough work that GC is still at it when the kill lands, however the two processes
        # are scheduled (with 400, a busy machine let GC finish before the poller looked).
        doomed = [c.post(server.endpoint, headers=new).headers["location"] for _ in range(1200)]
        half = {**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
        for url in doomed[:300]:
            c.patch(url, content=b"x" * 50, headers=half)
        c.delete(kept[0], headers=TUS)  # the first copy's name goes; its bytes stay for the rest
    time.sleep(1.2)
    gc = [HAUL, "gc", "--data-dir", str(server.data_dir), "--tombstone-ttl", "0",
          "--orphan-grace", "0"]  # fmt: skip
    uploads = server.data_dir / "uploads"
    left = len(list(uploads.iterdir()))
    for share in (1, 40, 120):  # interrupt GC at different points of its work
        proc = subprocess.Popen(gc, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # GC is at work once it has removed doomed files: kill it after this run's share of them.
        goal = left - share
        while len(list(uploads.iterdir())) > goal and proc.poll() is None:
            time.sleep(0.001)
        assert proc.poll() is None, "GC finished before the kill could land"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
        now_left = len(list(uploads.iterdir()))
        assert now_left < left  # it had removed something ...
        assert now_left > len(kept) - 1  # ... and had more to remove when it died
        left = now_left
    for _ in range(10):  # GC works in batches of 500: run it until it finds nothing to do
        report = json.loads(subprocess.run(gc, capture_output=True, check=True).stdout)
        if not any(report.values()):
            break
    else:
        raise AssertionError(f"GC still had work after 10 runs: {report}")
    with httpx.Client(trust_env=False) as c:
        for url in kept[1:]:
            assert hashlib.sha256(c.get(url).content).hexdigest() == sha256_file(keep)
        for url in doomed:
            assert c.head(url, headers=TUS).status_code == 404
    names = {p.name for p in (server.data_dir / "uploads").iterdir()}
    assert names == {url.rsplit("/", 1)[1] for url in kept[1:]}


def test_identical_content_uploaded_twice_in_full_is_stored_once(server, client, tmp_path) -> None:
    source = random_file(tmp_path / "twice.bin", 3 * MiB, seed=53)
    uploader = haul.Client(server.url, state_dir=tmp_path / "s", parallel=1)
    first = uploader.upload(source, dedup=False)
    second = uploader.upload(source, dedup=False)  # every byte sent again
    assert second.sent == 3 * MiB
    assert _stored_inodes(server, first.url) == _stored_inodes(server, second.url)
    uploader.delete(first.url)
    assert hashlib.sha256(client.get(second.url).content).hexdigest() == sha256_file(source)


def test_identical_parallel_uploads_are_stored_once(server, client, tmp_path) -> None:
    source = random_file(tmp_path / "par.bin", 12 * MiB, seed=54)
    uploader = haul.Client(server.url, state_dir=tmp_path / "s", parallel=4, chunk_size=2 * MiB)
    first = uploader.upload(source, dedup=False)
    second = uploader.upload(source, dedup=False)
    assert second.sent == 12 * MiB
    assert _stored_inodes(server, first.url) == _stored_inodes(server, second.url)
    uploader.delete(first.url)
    assert hashlib.sha256(client.get(second.url).content).hexdigest() == sha256_file(source)
