"""Whole-upload verification: declared digests (Repr-Digest, sha256 metadata), the digest the
server computes of what it stored, and failed uploads that are never served."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

import haul
from tests.helpers import (
    JS_DIR,
    TUS,
    HaulServer,
    create,
    env_without_proxy,
    head,
    patch,
    random_file,
    raw_patch,
    wait_for,
)

MiB = 1 << 20


def repr_digest(data: bytes) -> str:
    return f"sha-256=:{base64.b64encode(hashlib.sha256(data).digest()).decode()}:"


def test_declared_digest_is_verified_and_exposed(server, client: httpx.Client) -> None:
    data = b"verified bytes"
    url = create(client, server, len(data), **{"Repr-Digest": repr_digest(data)})
    assert "repr-digest" not in head(client, url).headers  # nothing verified yet
    assert patch(client, url, 0, data).status_code == 204
    assert head(client, url).headers["repr-digest"] == repr_digest(data)
    download = client.get(url)
    assert download.headers["repr-digest"] == repr_digest(data)
    assert download.content == data


def test_wrong_declared_digest_fails_the_upload(server, client: httpx.Client) -> None:
    data = b"these are not the declared bytes"
    url = create(client, server, len(data), **{"Repr-Digest": repr_digest(b"something else")})
    assert patch(client, url, 0, data[:10]).status_code == 204
    response = patch(client, url, 10, data[10:])
    assert response.status_code == 422
    assert response.text.startswith("ERR_DIGEST_MISMATCH: ")
    assert hashlib.sha256(data).hexdigest() in response.text
    gone = head(client, url)
    assert gone.status_code == 410
    assert client.get(url).status_code == 410  # never served
    assert "failed verification" in client.get(url).text
    assert not server.upload_path(url).exists()


def test_digest_declared_on_the_completing_patch(server, client: httpx.Client) -> None:
    data = b"x" * 1000
    url = create(client, server, len(data))
    patch(client, url, 0, data[:500])
    assert (
        patch(client, url, 500, data[500:], **{"Repr-Digest": repr_digest(data)}).status_code == 204
    )
    assert head(client, url).headers["repr-digest"] == repr_digest(data)
    other = create(client, server, 4, **{"Repr-Digest": repr_digest(b"abcd")})
    conflict = patch(client, other, 0, b"ab", **{"Repr-Digest": repr_digest(b"wxyz")})
    assert conflict.status_code == 409
    assert conflict.text.startswith("ERR_DIGEST_ALREADY_DECLARED: ")
    late = create(client, server, 4)
    patch(client, late, 0, b"ab")
    assert patch(client, late, 2, b"cd", **{"Repr-Digest": repr_digest(b"abXX")}).status_code == 422


@pytest.mark.parametrize(
    "value",
    ["sha-256=abc", "sha-256=:not base64!:", "sha-512=:" + "A" * 88 + ":", "sha-256=:AAAA:"],
)
def test_malformed_repr_digest_is_400(server, client: httpx.Client, value: str) -> None:
    response = client.post(
        server.endpoint, headers={**TUS, "Upload-Length": "1", "Repr-Digest": value}
    )
    assert response.status_code == 400
    assert response.text.startswith("ERR_INVALID_HEADER: ")


def test_every_upload_gets_a_digest_unless_disabled(make_server, client: httpx.Client) -> None:
    data = b"no digest declared"
    on = make_server()
    url = create(client, on, len(data))
    patch(client, url, 0, data)
    assert head(client, url).headers["repr-digest"] == repr_digest(data)
    empty = create(client, on, 0)
    assert head(client, empty).headers["repr-digest"] == repr_digest(b"")
    off = make_server("--no-verify-digest")
    url = create(client, off, len(data))
    patch(client, url, 0, data)
    assert "repr-digest" not in head(client, url).headers
    # A declared digest is still checked when computing digests is off.
    bad = create(client, off, len(data), **{"Repr-Digest": repr_digest(b"other")})
    assert patch(client, bad, 0, data).status_code == 422


def _resumed_after_a_crash(
    make_server: Callable[..., HaulServer], client: httpx.Client, data: bytes, **declared: str
) -> tuple[HaulServer, str, httpx.Response]:
    """An upload killed (-9) mid-request with ``declared`` headers, restarted, and its rest
    sent: the running digest died with the process, so the server must read the bytes back.
    (server, url, the completing PATCH's answer)"""
    server = make_server()
    url = create(client, server, len(data), **declared)
    request = raw_patch(server, url, 0, len(data))
    request.send(data[: 4 * MiB])
    wait_for(lambda: server.upload_path(url).stat().st_size >= 2 * MiB)
    server.kill()
    request.close()
    server.start()
    offset = int(head(client, url).headers["upload-offset"])
    assert 0 < offset < len(data)
    return server, url, patch(client, url, offset, data[offset:])


def test_digest_after_a_crash_is_computed_from_storage(
    make_server: Callable[..., HaulServer], client: httpx.Client, tmp_path: Path
) -> None:
    data = random_file(tmp_path / "f", 6 * MiB, seed=21).read_bytes()
    # Nothing declared: the digest the server reports can only come from the stored bytes.
    _, url, done = _resumed_after_a_crash(make_server, client, data)
    assert done.status_code == 204
    assert head(client, url).headers["repr-digest"] == repr_digest(data)
    _, url, done = _resumed_after_a_crash(
        make_server, client, data, **{"Repr-Digest": repr_digest(data)}
    )
    assert done.status_code == 204
    assert head(client, url).headers["repr-digest"] == repr_digest(data)


def _refused_and_discarded(
    server: HaulServer, client: httpx.Client, url: str, done: httpx.Response, data: bytes
) -> None:
    assert done.status_code == 422, done.text
    assert done.text.startswith("ERR_DIGEST_MISMATCH: ")
    assert hashlib.sha256(data).hexdigest() in done.text  # what the stored bytes hash to
    assert head(client, url).status_code == 410
    assert client.get(url).status_code == 410
    assert not server.upload_path(url).exists()


def test_wrong_digest_after_a_crash_is_refused(
    make_server: Callable[..., HaulServer], client: httpx.Client, tmp_path: Path
) -> None:
    data = random_file(tmp_path / "f", 6 * MiB, seed=24).read_bytes()
    wrong = {"Repr-Digest": repr_digest(data[:-1] + b"?")}
    server, url, done = _resumed_after_a_crash(make_server, client, data, **wrong)
    _refused_and_discarded(server, client, url, done, data)


@pytest.mark.parametrize("declared_on", ["creation", "completing patch"])
def test_wrong_digest_of_an_upload_written_by_two_processes_is_refused(
    make_server: Callable[..., HaulServer], client: httpx.Client, tmp_path: Path, declared_on: str
) -> None:
    """Two servers on one data dir (SQLite and flock shared): the first bytes through one, the
    rest through the other, which never saw them and must read them back to hash them."""
    data = random_file(tmp_path / "f", 3 * MiB + 7, seed=25).read_bytes()
    first = make_server(data_dir=tmp_path / "shared")
    second = make_server(data_dir=tmp_path / "shared")
    wrong = {"Repr-Digest": repr_digest(data[:-1] + b"?")}
    url = create(client, first, len(data), **(wrong if declared_on == "creation" else {}))
    assert patch(client, url, 0, data[: 2 * MiB]).status_code == 204
    there = url.replace(str(first.port), str(second.port))
    rest = wrong if declared_on == "completing patch" else {}
    done = patch(client, there, 2 * MiB, data[2 * MiB :], **rest)
    _refused_and_discarded(second, client, there, done, data)
    assert head(client, url).status_code == 410  # the first server agrees


def test_upload_written_by_two_processes_gets_the_digest_of_its_bytes(
    make_server: Callable[..., HaulServer], client: httpx.Client, tmp_path: Path
) -> None:
    data = random_file(tmp_path / "f", 3 * MiB + 7, seed=26).read_bytes()
    first = make_server(data_dir=tmp_path / "shared")
    second = make_server(data_dir=tmp_path / "shared")
    url = create(client, first, len(data))
    assert patch(client, url, 0, data[: 2 * MiB]).status_code == 204
    there = url.replace(str(first.port), str(second.port))
    assert patch(client, there, 2 * MiB, data[2 * MiB :]).status_code == 204
    assert head(client, url).headers["repr-digest"] == repr_digest(data)
    assert client.get(url).content == data


def test_concatenated_upload_is_verified(server, client: httpx.Client) -> None:
    parts = [b"first part|", b"second part|", b"third"]
    urls = []
    for part in parts:
        url = create(client, server, len(part), **{"Upload-Concat": "partial"})
        patch(client, url, 0, part)
        urls.append(url)
    whole = b"".join(parts)
    concat = "final;" + " ".join(urls)
    headers = {**TUS, "Upload-Concat": concat, "Repr-Digest": repr_digest(whole)}
    final = client.post(server.endpoint, headers=headers)
    assert final.status_code == 201
    assert head(client, final.headers["location"]).headers["repr-digest"] == repr_digest(whole)

    again = []
    for part in parts:
        url = create(client, server, len(part), **{"Upload-Concat": "partial"})
        patch(client, url, 0, part)
        again.append(url)
    wrong = client.post(server.endpoint, headers={
        **TUS, "Upload-Concat": "final;" + " ".join(reversed(again)),
        "Repr-Digest": repr_digest(whole)})  # fmt: skip
    assert wrong.status_code == 422


def test_tus_js_client_declares_the_digest_in_metadata(server, client, tmp_path) -> None:
    source = random_file(tmp_path / "m.bin", 3 * MiB, seed=22)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()

    def upload(declared: str) -> dict:
        options = {"file": str(source), "endpoint": server.endpoint,
                   "metadata": {"filename": "m.bin", "sha256": declared}}  # fmt: skip
        command = ["node", str(JS_DIR / "tus_upload.mjs"), json.dumps(options)]
        out = subprocess.run(
            command, capture_output=True, text=True, env=env_without_proxy(), timeout=120
        )
        return json.loads(out.stdout.splitlines()[-1])

    good = upload(digest)
    assert head(client, good["url"]).headers["repr-digest"] == repr_digest(source.read_bytes())
    bad = upload("0" * 64)
    assert "ERR_DIGEST_MISMATCH" in bad["error"]


@pytest.mark.parametrize("parallel", [1, 4])
def test_haul_client_declares_and_confirms_the_digest(server, tmp_path, parallel) -> None:
    source = random_file(tmp_path / "c.bin", 20 * MiB + 1, seed=23)
    result = haul.Client(server.url, parallel=parallel, chunk_size=4 * MiB,
                         state_dir=tmp_path / "state").upload(source)  # fmt: skip
    with httpx.Client(trust_env=False) as c:
        reported = c.head(result.url, headers=TUS).headers["repr-digest"]
    assert reported == f"sha-256=:{base64.b64encode(bytes.fromhex(result.sha256)).decode()}:"
    assert result.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()


def test_checksummed_patch_and_whole_digest_together(server, client: httpx.Client) -> None:
    data = b"0123456789"
    url = create(client, server, 10, **{"Repr-Digest": repr_digest(data)})
    bad = base64.b64encode(hashlib.sha1(b"nope").digest()).decode()
    assert patch(client, url, 0, data[:5], **{"Upload-Checksum": f"sha1 {bad}"}).status_code == 460
    good = base64.b64encode(hashlib.sha1(data[:5]).digest()).decode()
    assert patch(client, url, 0, data[:5], **{"Upload-Checksum": f"sha1 {good}"}).status_code == 204
    assert patch(client, url, 5, data[5:]).status_code == 204
    assert head(client, url).headers["repr-digest"] == repr_digest(data)
    assert client.get(url).content == data


def test_sha256_checksum_from_offset_zero_shares_the_running_digest(server, client) -> None:
    data = b"the whole upload in one request"
    url = create(client, server, len(data), **{"Repr-Digest": repr_digest(data)})
    wrong = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    assert patch(client, url, 0, data, **{"Upload-Checksum": f"sha256 {wrong}"}).status_code == 460
    right = base64.b64encode(hashlib.sha256(data[:10]).digest()).decode()
    assert (
        patch(client, url, 0, data[:10], **{"Upload-Checksum": f"sha256 {right}"}).status_code
        == 204
    )
    assert patch(client, url, 10, data[10:]).status_code == 204
    assert head(client, url).headers["repr-digest"] == repr_digest(data)
