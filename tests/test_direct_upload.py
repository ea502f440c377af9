"""Direct upload: part URLs presigned by haul, bytes sent straight to S3 (a real Ceph RGW,
which checks signatures and expiry). The haul CLI (--direct) and Uppy's @uppy/aws-s3."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from playwright.sync_api import expect

from tests.browser import build_client_bundles, chromium
from tests.helpers import (
    HAUL,
    TUS,
    HaulServer,
    env_without_proxy,
    free_port,
    random_file,
    sha256_file,
    wait_for,
    wait_until_still,
)
from tests.proxy import ChaosProxy
from tests.services import allow_browser_uploads, run_async, s3_client
from tests.test_s3_server import bucket_listing, s3_options

MiB = 1 << 20
ALICE, BOB = "alice-key-0123456789abcdef", "bob-key-0123456789abcdef00"


def start(client: httpx.Client, server: HaulServer, **headers: str) -> tuple[str, str]:
    created = client.post(server.url + "/s3/multipart", json={"filename": "f.bin"},
                          headers=headers)  # fmt: skip
    assert created.status_code == 200, created.text
    return created.json()["key"], created.json()["uploadId"]


def test_cli_direct_upload_never_sends_the_bytes_through_haul(
    make_server: Callable[..., HaulServer], rgw: str, s3_bucket: str, tmp_path: Path
) -> None:
    server = make_server(*s3_options(rgw, s3_bucket))
    proxy = ChaosProxy(server.port).start()  # counts what reaches haul
    try:
        source = random_file(tmp_path / "direct.bin", 40 * MiB + 3, seed=51)
        done = subprocess.run(
            [HAUL, "upload", str(source), "--server", proxy.url, "--direct", "--json",
             "--parallel", "4"],
            capture_output=True, text=True, timeout=180,
            env={**env_without_proxy(), "HAUL_STATE_DIR": str(tmp_path / "state")},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert proxy.upstream_bytes < 256 * 1024  # JSON calls only: no content through haul
    finally:
        proxy.stop()
    url = result["url"].replace(proxy.url, server.url)
    with httpx.Client(trust_env=False, timeout=60) as client:
        body = client.get(url).content
        # The server's own digest of what S3 holds, verified in the background after the
        # completion (the client did not wait for a read-back): the file's.
        wait_for(lambda: "repr-digest" in client.head(url, headers=TUS).headers, timeout=60)
        head = client.head(url, headers=TUS)
    assert hashlib.sha256(body).hexdigest() == sha256_file(source) == result["sha256"]
    assert head.headers["upload-length"] == str(source.stat().st_size)
    expected = base64.b64encode(hashlib.sha256(source.read_bytes()).digest()).decode()
    assert head.headers["repr-digest"] == f"sha-256=:{expected}:"


def test_cli_says_when_the_server_has_not_verified_the_digest_yet(
    make_server: Callable[..., HaulServer], rgw: str, s3_bucket: str, tmp_path: Path
) -> None:
    # A node that leaves verification to others: the digest stays pending, deterministically.
    server = make_server(*s3_options(rgw, s3_bucket), "--verify-interval", "0")
    source = random_file(tmp_path / "pending.bin", 9 * MiB, seed=53)
    env = {**env_without_proxy(), "HAUL_STATE_DIR": str(tmp_path / "state")}
    command = [HAUL, "upload", str(source), "--server", server.url, "--direct"]
    done = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=120,
                          env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["ok"] is True
    assert result["digest_pending"] is True
    with httpx.Client(trust_env=False, timeout=60) as client:
        head = client.head(result["url"], headers=TUS)
    assert head.headers["haul-digest-pending"] == "?1"
    assert "repr-digest" not in head.headers
    spoken = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert spoken.returncode == 0, spoken.stderr
    assert "verified by the server in the background" in spoken.stdout + spoken.stderr


def stored_parts(rgw: str, bucket: str) -> list[int]:
    """Sizes of the parts the store holds for the bucket's one unfinished multipart upload."""

    async def listing() -> list[int]:
        async with s3_client(rgw) as s3:
            uploads: Any = await s3.list_multipart_uploads(Bucket=bucket)
            found = uploads.get("Uploads", [])
            if len(found) != 1:
                return []
            upload = found[0]
            parts: Any = await s3.list_parts(
                Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
        return [part["Size"] for part in parts.get("Parts", [])]

    return run_async(listing())


def test_cli_direct_upload_resumes_after_being_killed(
    make_server: Callable[..., HaulServer], rgw: str, s3_bucket: str, tmp_path: Path
) -> None:
    # The store is reached through a slow link, so the kill lands between parts.
    link = ChaosProxy(urlsplit(rgw).port or 80, rate=8 * MiB).start()
    try:
        server = make_server(*s3_options(link.url, s3_bucket))
        source = random_file(tmp_path / "big.bin", 48 * MiB + 5, seed=52)  # 7 parts of 8 MiB
        command = [HAUL, "upload", str(source), "--server", server.url, "--direct", "--json",
                   "--parallel", "2", "--chunk-size", "8MiB"]  # fmt: skip
        env = {**env_without_proxy(), "HAUL_STATE_DIR": str(tmp_path / "state")}
        first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        wait_for(lambda: len(stored_parts(rgw, s3_bucket)) >= 2, timeout=60)
        first.kill()
        first.communicate(timeout=30)
        link.rate = None
        # What the killed client left in socket buffers drains first (the store drops it).
        before = wait_until_still(lambda: link.upstream_bytes, still_for=1.0, timeout=60)
        kept = sum(stored_parts(rgw, s3_bucket))
        assert 16 * MiB <= kept < source.stat().st_size
        done = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result["resumed"] is True
        left = source.stat().st_size - kept
        assert result["sent"] <= left  # only the parts the store did not hold
        assert link.upstream_bytes - before < left + MiB  # (and what haul itself asked)
        with httpx.Client(trust_env=False, timeout=60) as client:
            body = client.get(result["url"]).content  # haul reads it through the link too
    finally:
        link.stop()
    assert hashlib.sha256(body).hexdigest() == sha256_file(source) == result["sha256"]
    assert bucket_listing(rgw, s3_bucket)[1] == []  # no multipart upload left behind
    assert not list((tmp_path / "state" / "uploads").glob("*.json"))  # state cleaned up


def test_presigned_urls_expire_and_belong_to_their_owner(
    make_server: Callable[..., HaulServer], rgw: str, s3_bucket: str
) -> None:
    server = make_server(*s3_options(rgw, s3_bucket), "--direct-url-ttl", "1s",
                         "--api-keys", f"alice:{ALICE},bob:{BOB}")  # fmt: skip
    alice, bob = {"Authorization": f"Bearer {ALICE}"}, {"Authorization": f"Bearer {BOB}"}
    with httpx.Client(trust_env=False, timeout=60) as client:
        assert client.post(server.url + "/s3/multipart", json={}).status_code == 401
        key, upload_id = start(client, server, **alice)
        sign = f"{server.url}/s3/multipart/{upload_id}/1"
        assert client.get(sign, params={"key": key}, headers=bob).status_code == 404
        listing = f"{server.url}/s3/multipart/{upload_id}"
        assert client.get(listing, params={"key": key}, headers=bob).status_code == 404
        assert client.delete(listing, params={"key": key}, headers=bob).status_code == 404
        assert client.get(sign, params={"key": key}, headers=alice).status_code == 200
        expiring = client.get(sign, params={"key": key}, headers=alice).json()["url"]
        time.sleep(2.5)
        assert client.put(expiring, content=b"late").status_code == 403  # the store refuses
        fresh = client.get(sign, params={"key": key}, headers=alice).json()["url"]
        assert client.put(fresh, content=b"in time").status_code == 200
        bad_part = client.get(f"{sign[:-1]}0", params={"key": key}, headers=alice)
        assert bad_part.status_code == 400


def test_completion_checks_the_parts_and_abort_removes_everything(
    make_server: Callable[..., HaulServer], rgw: str, s3_bucket: str
) -> None:
    server = make_server(*s3_options(rgw, s3_bucket))
    with httpx.Client(trust_env=False, timeout=60) as client:
        key, upload_id = start(client, server)
        url = client.get(f"{server.url}/s3/multipart/{upload_id}/1", params={"key": key}).json()
        etag = client.put(url["url"], content=b"only part").headers["etag"]
        complete = f"{server.url}/s3/multipart/{upload_id}/complete"
        wrong = {"parts": [{"PartNumber": 1, "ETag": '"' + "0" * 32 + '"'}]}
        forged = client.post(complete, params={"key": key}, json=wrong)
        assert forged.status_code == 400
        assert "was not received" in forged.text
        missing = client.post(complete, params={"key": key},
                              json={"parts": [{"PartNumber": 2, "ETag": etag}]})  # fmt: skip
        assert missing.status_code == 400
        done = client.post(complete, params={"key": key},
                           json={"parts": [{"PartNumber": 1, "ETag": etag}]})  # fmt: skip
        assert done.status_code == 200, done.text
        assert client.get(done.json()["location"]).content == b"only part"
        # The same completion again (its answer was lost): the same answer, nothing redone.
        again = client.post(complete, params={"key": key},
                            json={"parts": [{"PartNumber": 1, "ETag": etag}]})  # fmt: skip
        assert again.status_code == 200, again.text
        assert again.json() == done.json()
        others = client.post(complete, params={"key": key}, headers={"Authorization": "Bearer x"},
                             json={"parts": [{"PartNumber": 1, "ETag": etag}]})  # fmt: skip
        assert others.status_code in (401, 404)
        # Abort: the multipart upload and its parts are gone, the upload answers 410.
        key, upload_id = start(client, server)
        url = client.get(f"{server.url}/s3/multipart/{upload_id}/1", params={"key": key}).json()
        client.put(url["url"], content=b"x" * 100)
        aborted = client.delete(f"{server.url}/s3/multipart/{upload_id}", params={"key": key})
        assert aborted.status_code == 204
        assert client.head(f"{server.endpoint}{key}", headers=TUS).status_code == 410
    objects, multipart = bucket_listing(rgw, s3_bucket)
    assert multipart == []
    assert [k for k in objects if key in k] == []


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_uppy_aws_s3_uploads_through_the_presigned_contract(
    make_server: Callable[..., HaulServer], rgw: str, s3_bucket: str, tmp_path: Path
) -> None:
    allow_browser_uploads(rgw, s3_bucket)
    server = make_server(*s3_options(rgw, s3_bucket))
    source = random_file(tmp_path / "via-uppy.bin", 12 * MiB + 5, seed=52)
    bundles = build_client_bundles(tmp_path / "bundles")
    (bundles / "index.html").write_text(
        '<!doctype html><html><head><meta charset="utf-8"><link rel="stylesheet" '
        'href="uppy-s3.css"></head><body><div id="uppy"></div>'
        '<script type="module" src="uppy-s3.js"></script></body></html>'
    )
    site = free_port()  # the web site embedding Uppy: its own origin, as in real life
    web = subprocess.Popen([sys.executable, "-m", "http.server", str(site), "--bind", "127.0.0.1",
                            "--directory", str(bundles)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for(lambda: _listening(site))
        with chromium() as browser:
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{site}/?haul={server.url}")
            page.set_input_files(".uppy-Dashboard-input >> nth=0", str(source))
            page.locator(".uppy-StatusBar-actionBtn--upload").click()
            expect(page.locator("body[data-done=true]")).to_have_count(1, timeout=120_000)
            result = page.evaluate("window.result")
    finally:
        web.terminate()
        web.wait(10)
    assert result["failed"] == []
    [location] = result["successful"]
    with httpx.Client(trust_env=False, timeout=60) as client:
        body = client.get(location).content
    assert hashlib.sha256(body).hexdigest() == sha256_file(source)


def test_an_owners_rate_limit_counts_direct_and_tus_requests_together(
    make_server: Callable[..., HaulServer], rgw: str, s3_bucket: str
) -> None:
    server = make_server(*s3_options(rgw, s3_bucket), "--api-keys", f"alice:{ALICE}",
                         "--rate-limit", "0.2", "--rate-burst", "4")  # fmt: skip
    alice = {"Authorization": f"Bearer {ALICE}"}
    tus_alice = {**TUS, **alice}
    elsewhere = httpx.HTTPTransport(local_address="127.0.0.2")  # a fresh per-address bucket
    with (
        httpx.Client(trust_env=False, timeout=60) as here,
        httpx.Client(transport=elsewhere, trust_env=False, timeout=60) as there,
    ):
        key, upload_id = start(here, server, **alice)
        parts = f"{server.url}/s3/multipart/{upload_id}"
        assert here.get(parts, params={"key": key}, headers=alice).status_code == 200
        assert there.head(f"{server.endpoint}{key}", headers=tus_alice).status_code == 200
        assert there.head(f"{server.endpoint}{key}", headers=tus_alice).status_code == 200
        # The owner spent a burst of 4, half on /s3/multipart; the address only 2 of its 4.
        refused = there.get(f"{parts}/1", params={"key": key}, headers=alice)
        assert refused.status_code == 429
        assert refused.text.startswith("ERR_RATE_LIMITED")
