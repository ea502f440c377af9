"""Verification without a read-back, on a real Ceph RGW: every presigned part carries its MD5,
which the store itself checks; a direct upload completes without haul reading it back, its
SHA-256 pending until a background verifier (any node, or the same one after a restart) has
read it; a declared digest that turns out wrong fails the upload, is counted, and its content
is never shared."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.helpers import TUS, HaulServer, wait_for
from tests.proxy import ChaosProxy
from tests.test_direct_upload import start
from tests.test_s3_server import bucket_listing, s3_options

MiB = 1 << 20
PART = 5 * MiB  # the store's smallest part but the last


def md5_of(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def repr_digest(data: bytes) -> str:
    return f"sha-256=:{base64.b64encode(hashlib.sha256(data).digest()).decode()}:"


def send_parts(
    client: httpx.Client, server: HaulServer, data: bytes
) -> tuple[str, str, list[dict[str, object]]]:
    """Upload ``data`` in presigned, MD5-checked parts: the key, the multipart id, the parts."""
    key, upload_id = start(client, server)
    parts: list[dict[str, object]] = []
    for number, first in enumerate(range(0, len(data), PART), start=1):
        chunk = data[first : first + PART]
        signed = client.get(f"{server.url}/s3/multipart/{upload_id}/{number}",
                            params={"key": key, "md5": md5_of(chunk)}).json()  # fmt: skip
        assert signed["headers"] == {"Content-MD5": md5_of(chunk)}
        put = client.put(signed["url"], content=chunk, headers=signed["headers"])
        assert put.status_code == 200, put.text
        parts.append({"PartNumber": number, "ETag": put.headers["etag"]})
    return key, upload_id, parts


def complete(
    client: httpx.Client, server: HaulServer, key: str, upload_id: str,
    parts: list[dict[str, object]], sha256: str | None,
) -> httpx.Response:  # fmt: skip
    body: dict[str, object] = {"parts": parts}
    if sha256 is not None:
        body["sha256"] = sha256
    return client.post(f"{server.url}/s3/multipart/{upload_id}/complete",
                       params={"key": key}, json=body)  # fmt: skip


def send_direct(
    client: httpx.Client, server: HaulServer, data: bytes, *, sha256: str | None = None
) -> tuple[str, httpx.Response]:
    """The parts, then the completion (declaring ``sha256``); the upload's key and the answer."""
    key, upload_id, parts = send_parts(client, server, data)
    return key, complete(client, server, key, upload_id, parts, sha256)


def offers_instant_upload(client: httpx.Client, server: HaulServer, data: bytes) -> bool:
    """Whether a new upload declaring ``data``'s digest completes with no byte sent."""
    created = client.post(server.endpoint, headers={
        **TUS, "Upload-Length": str(len(data)), "Repr-Digest": repr_digest(data)})  # fmt: skip
    assert created.status_code == 201, created.text
    return created.headers.get("upload-offset") == str(len(data))


def test_the_store_refuses_a_part_whose_bytes_differ_from_the_signed_md5(
    make_server: Callable[..., HaulServer], rgw: str, s3_bucket: str
) -> None:
    server = make_server(*s3_options(rgw, s3_bucket))
    part = os.urandom(PART)
    with httpx.Client(trust_env=False, timeout=60) as client:
        key, upload_id = start(client, server)
        sign = f"{server.url}/s3/multipart/{upload_id}/1"
        plain = client.get(sign, params={"key": key}).json()  # Uppy's default: no md5
        assert set(plain) == {"url", "expires"}
        signed = client.get(sign, params={"key": key, "md5": md5_of(part)}).json()
        flipped = bytes([part[0] ^ 1]) + part[1:]
        refused = client.put(signed["url"], content=flipped, headers=signed["headers"])
        assert refused.status_code == 400  # BadDigest: the store hashed the bytes itself
        assert "BadDigest" in refused.text
        unsent = client.put(signed["url"], content=part)  # the signed header left out
        assert unsent.status_code == 403
        listing = f"{server.url}/s3/multipart/{upload_id}"
        assert client.get(listing, params={"key": key}).json() == []
        accepted = client.put(signed["url"], content=part, headers=signed["headers"])
        assert accepted.status_code == 200
        assert [p["Size"] for p in client.get(listing, params={"key": key}).json()] == [PART]
        for bad in ("not-base64!", base64.b64encode(b"short").decode()):
            answer = client.get(sign, params={"key": key, "md5": bad})
            assert answer.status_code == 400
            assert answer.text.startswith("ERR_BAD_REQUEST")
        parts: list[dict[str, object]] = [{"PartNumber": 1, "ETag": accepted.headers["etag"]}]
        wrong = complete(client, server, key, upload_id, parts, "12")
        assert wrong.status_code == 400
        assert "64 hex digits" in wrong.text


def test_a_direct_upload_completes_without_a_read_back_and_a_restart_verifies_it(
    make_server: Callable[..., HaulServer], rgw: str, s3_bucket: str, tmp_path: Path
) -> None:
    data = os.urandom(3 * PART + 12345)
    link = ChaosProxy(urlsplit(rgw).port or 80).start()  # counts what the store answers
    data_dir = tmp_path / "node"
    try:
        # A node that verifies nothing in the background, killed before anyone verified.
        first = make_server(*s3_options(link.url, s3_bucket), "--anonymous-dedup",
                            "--verify-interval", "0", data_dir=data_dir)  # fmt: skip
        digest = hashlib.sha256(data).hexdigest()
        with httpx.Client(trust_env=False, timeout=60) as client:
            key, upload_id, parts = send_parts(client, first, data)
            before = link.downstream_bytes
            done = complete(client, first, key, upload_id, parts, digest)
            assert done.status_code == 200, done.text
            url = f"{first.endpoint}{key}"
            head = client.head(url, headers=TUS)
            assert head.status_code == 200
            assert head.headers["upload-offset"] == str(len(data))  # complete at once
            assert "repr-digest" not in head.headers  # its SHA-256 still pending
            assert client.get(f"{first.url}/api/uploads/{key}").json()["sha256"] is None
            assert not offers_instant_upload(client, first, data)  # pending: never shared
            # What the store sent haul from the completion on: no read-back of the object.
            assert link.downstream_bytes - before < len(data) // 4
            # The same measure sees the read-back of a node that waits for it.
            waiting = make_server(*s3_options(link.url, s3_bucket), "--verify-later", "off")
            key2, upload2, parts2 = send_parts(client, waiting, data)
            before = link.downstream_bytes
            assert complete(client, waiting, key2, upload2, parts2, digest).status_code == 200
            assert link.downstream_bytes - before >= len(data)
    finally:
        link.stop()
    first.kill()
    second = make_server(*s3_options(rgw, s3_bucket), "--anonymous-dedup", data_dir=data_dir)
    with httpx.Client(trust_env=False, timeout=60) as client:
        url = f"{second.endpoint}{key}"
        wait_for(lambda: "repr-digest" in client.head(url, headers=TUS).headers, timeout=60)
        assert client.head(url, headers=TUS).headers["repr-digest"] == repr_digest(data)
        assert client.get(url).content == data
        assert client.get(f"{second.url}/api/uploads/{key}").json()["sha256"] == (
            hashlib.sha256(data).hexdigest()
        )
        assert offers_instant_upload(client, second, data)  # verified: now it is shared


def test_a_wrong_declared_digest_found_later_fails_the_upload_counted_and_unshared(
    make_server: Callable[..., HaulServer], rgw: str, s3_bucket: str
) -> None:
    server = make_server(*s3_options(rgw, s3_bucket), "--metrics", "--anonymous-dedup")
    data = os.urandom(2 * PART + 7)
    declared = hashlib.sha256(b"not these bytes").hexdigest()
    with httpx.Client(trust_env=False, timeout=60) as client:
        key, done = send_direct(client, server, data, sha256=declared)
        assert done.status_code == 200, done.text  # completes: the parts were as sent
        url = f"{server.endpoint}{key}"
        wait_for(lambda: client.head(url, headers=TUS).status_code == 410, timeout=60)
        refused = client.get(url)
        assert refused.status_code == 410
        assert "failed verification" in refused.text
        # Counted once the bytes are removed, just after the record says failed.
        mismatches = "haul_digest_mismatches_total 1.0"
        wait_for(lambda: mismatches in client.get(f"{server.url}/metrics").text, timeout=30)
        metrics = client.get(f"{server.url}/metrics").text
        assert 'haul_uploads_failed_total{reason="digest"} 1.0' in metrics
        assert not offers_instant_upload(client, server, data)
        assert not offers_instant_upload(client, server, b"not these bytes")
        wait_for(lambda: not [k for k in bucket_listing(rgw, s3_bucket)[0] if key in k])
        # A correct one afterwards is verified and shared as usual.
        other = os.urandom(PART + 1)
        key2, done2 = send_direct(client, server, other, sha256=hashlib.sha256(other).hexdigest())
        assert done2.status_code == 200
        url2 = f"{server.endpoint}{key2}"
        wait_for(lambda: "repr-digest" in client.head(url2, headers=TUS).headers, timeout=60)
        assert offers_instant_upload(client, server, other)
        assert mismatches in client.get(f"{server.url}/metrics").text  # counted once


def test_an_upload_finished_on_a_node_without_its_running_digest_is_verified_later(
    make_server: Callable[..., HaulServer], rgw: str, s3_bucket: str, tmp_path: Path
) -> None:
    """Two nodes sharing records: one receives the first half, the other finishes it (and
    has no running digest of the first half) and verifies nothing; the first one's verifier
    finds the pending digest on its rounds."""
    shared = tmp_path / "shared"
    options = [*s3_options(rgw, s3_bucket), "--anonymous-dedup"]
    first = make_server(*options, "--verify-interval", "1s", data_dir=shared)
    second = make_server(*options, "--verify-interval", "0", data_dir=shared)
    data = os.urandom(PART + 4321)
    half = PART  # a whole part: the first request's bytes reach the store as one part
    octets = {**TUS, "Content-Type": "application/offset+octet-stream"}
    with httpx.Client(trust_env=False, timeout=60) as client:
        created = client.post(first.endpoint, headers={
            **TUS, "Upload-Length": str(len(data)), "Repr-Digest": repr_digest(data)})  # fmt: skip
        path = urlsplit(created.headers["location"]).path
        sent = client.patch(f"{first.url}{path}", content=data[:half],
                            headers={**octets, "Upload-Offset": "0"})  # fmt: skip
        assert sent.status_code == 204, sent.text
        done = client.patch(f"{second.url}{path}", content=data[half:],
                            headers={**octets, "Upload-Offset": str(half)})  # fmt: skip
        assert done.status_code == 204, done.text  # answered without a read-back
        url = f"{second.url}{path}"
        wait_for(lambda: "repr-digest" in client.head(url, headers=TUS).headers, timeout=60)
        assert client.head(url, headers=TUS).headers["repr-digest"] == repr_digest(data)
        assert offers_instant_upload(client, second, data)
    upload_id = path.rsplit("/", 1)[1]
    assert second.log_path is not None
    assert first.log_path is not None
    assert f"upload {upload_id} complete ({len(data)} bytes), its sha-256 to be verified" in (
        second.log_path.read_text()
    )
    assert f"upload {upload_id} verified in the background" in first.log_path.read_text()
