"""Instant upload (秒传) and shared storage: a declared digest the owner already stored
completes at once, with no body bytes; knowing a digest alone never grants content."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from pathlib import Path

import httpx

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


def test_second_upload_of_200mb_sends_no_body_bytes(make_server, tmp_path: Path) -> None:
    server = make_server("--anonymous-dedup")
    source = random_file(tmp_path / "big.bin", 200 * MiB, seed=41)
    proxy = ChaosProxy(server.port).start()
    try:
        client = haul.Client(proxy.url, state_dir=tmp_path / "state")
        first = client.upload(source)
        assert first.instant is False
        before = proxy.upstream_bytes
        assert before > 200 * MiB
        second = client.upload(source)
        received = proxy.upstream_bytes - before
    finally:
        proxy.stop()
    assert second.instant is True
    assert second.sent == 0
    assert received < 16 * 1024, received  # request heads only: no body byte crossed
    assert second.url != first.url
    first_url = first.url.replace(str(proxy.port), str(server.port))
    second_url = second.url.replace(str(proxy.port), str(server.port))
    with httpx.Client(trust_env=False, timeout=60) as c:
        assert c.head(second_url, headers=TUS).headers["upload-offset"] == str(200 * MiB)
        download = c.get(second_url)
    assert hashlib.sha256(download.content).hexdigest() == sha256_file(source)
    # Stored once: the second upload's bytes are the first one's, not a copy.
    assert _stored_inodes(server, second_url) == _stored_inodes(server, first_url)


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
