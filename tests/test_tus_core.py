"""tus 1.0.0 core protocol and the creation, expiration, termination and checksum extensions,
against a real `haul serve` over a socket."""

from __future__ import annotations

import base64
import hashlib
import zlib
from email.utils import parsedate_to_datetime

import httpx
import pytest

from tests.helpers import OCTETS, TUS, create, head, patch


def test_options_advertises_everything(server, client: httpx.Client) -> None:
    response = client.options(server.endpoint)
    assert response.status_code == 204
    assert response.headers["tus-version"] == "1.0.0"
    extensions = set(response.headers["tus-extension"].split(","))
    assert extensions == {
        "creation", "creation-with-upload", "creation-defer-length", "expiration", "checksum",
        "termination", "concatenation", "concatenation-unfinished",
    }  # fmt: skip
    # No maintained ASGI server hands request trailers to the application, so the
    # checksum-trailer extension is deliberately not advertised (see README).
    assert "checksum-trailer" not in extensions
    algorithms = set(response.headers["tus-checksum-algorithm"].split(","))
    assert {"md5", "sha1", "sha256", "crc32"} <= algorithms
    assert "tus-max-size" not in response.headers


def test_max_size_is_advertised_and_enforced(make_server, client: httpx.Client) -> None:
    server = make_server("--max-size", "1KiB")
    assert client.options(server.endpoint).headers["tus-max-size"] == "1024"
    too_big = client.post(server.endpoint, headers={**TUS, "Upload-Length": "1025"})
    assert too_big.status_code == 413
    assert too_big.text.startswith("ERR_MAX_SIZE_EXCEEDED: ")
    url = create(client, server, None, **{"Upload-Defer-Length": "1"})
    overflow = patch(client, url, 0, b"x" * 1025)
    assert overflow.status_code == 413
    assert head(client, url).headers["upload-offset"] == "0"


def test_full_upload_in_two_patches(server, client: httpx.Client) -> None:
    url = create(client, server, 11, **{"Upload-Metadata": "filename aGVsbG8udHh0"})
    assert url.startswith(server.endpoint)
    first = patch(client, url, 0, b"hello")
    assert first.status_code == 204
    assert first.headers["upload-offset"] == "5"
    assert first.headers["tus-resumable"] == "1.0.0"
    status = head(client, url)
    assert status.status_code == 200
    assert status.headers["upload-offset"] == "5"
    assert status.headers["upload-length"] == "11"
    assert status.headers["cache-control"] == "no-store"
    second = patch(client, url, 5, b" world")
    assert second.headers["upload-offset"] == "11"
    assert "upload-expires" not in second.headers  # complete uploads do not expire
    download = client.get(url)
    assert download.status_code == 200
    assert download.content == b"hello world"


def test_every_response_carries_tus_resumable(server, client: httpx.Client) -> None:
    url = create(client, server, 3)
    for response in (
        head(client, url),
        patch(client, url, 1, b"x"),  # 409
        client.head(server.endpoint + "0" * 32, headers=TUS),  # 404
        client.options(url),
    ):
        assert response.headers["tus-resumable"] == "1.0.0", response


def test_wrong_version_is_412_with_tus_version(server, client: httpx.Client) -> None:
    for headers in ({"Tus-Resumable": "0.2.2"}, {}):
        response = client.post(server.endpoint, headers={**headers, "Upload-Length": "1"})
        assert response.status_code == 412
        assert response.headers["tus-version"] == "1.0.0"
        assert response.text.startswith("ERR_UNSUPPORTED_VERSION: ")
    url = create(client, server, 1)
    assert client.head(url, headers={"Tus-Resumable": "2.0.0"}).status_code == 412
    bad_patch = client.patch(
        url, content=b"x", headers={"Upload-Offset": "0", "Content-Type": OCTETS}
    )
    assert bad_patch.status_code == 412
    assert bad_patch.headers["tus-version"] == "1.0.0"


def test_patch_needs_the_offset_content_type(server, client: httpx.Client) -> None:
    url = create(client, server, 4)
    for content_type in ("application/octet-stream", "text/plain", ""):
        response = patch(client, url, 0, b"data", **{"Content-Type": content_type})
        assert response.status_code == 415
        assert response.text.startswith("ERR_INVALID_CONTENT_TYPE: ")
    assert head(client, url).headers["upload-offset"] == "0"


def test_wrong_offset_is_409_and_changes_nothing(server, client: httpx.Client) -> None:
    url = create(client, server, 10)
    patch(client, url, 0, b"abc")
    for offset in (0, 2, 4, 100):
        response = patch(client, url, offset, b"zz")
        assert response.status_code == 409
        assert response.text.startswith("ERR_MISMATCHED_OFFSET: ")
    assert head(client, url).headers["upload-offset"] == "3"


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"Upload-Offset": "-1"}, "ERR_INVALID_HEADER"),
        ({"Upload-Offset": "1e3"}, "ERR_INVALID_HEADER"),
        ({"Upload-Offset": "99999999999999999999999"}, "ERR_INVALID_HEADER"),
        ({"Upload-Checksum": "sha1"}, "ERR_INVALID_CHECKSUM_HEADER"),
        ({"Upload-Checksum": "sha1 !!notbase64"}, "ERR_INVALID_CHECKSUM_HEADER"),
        ({"Upload-Checksum": "whirlpool AAAA"}, "ERR_UNSUPPORTED_CHECKSUM_ALGORITHM"),
    ],
)
def test_malformed_patch_headers_are_400(server, client: httpx.Client, headers, code) -> None:
    url = create(client, server, 4)
    hdrs = {**TUS, "Content-Type": OCTETS, "Upload-Offset": "0", **headers}
    response = client.patch(url, content=b"data", headers=hdrs)
    assert response.status_code == 400, response.text
    assert response.text.startswith(f"{code}: "), response.text
    assert head(client, url).headers["upload-offset"] == "0"


def test_patch_without_offset_is_400(server, client: httpx.Client) -> None:
    url = create(client, server, 4)
    response = client.patch(url, content=b"data", headers={**TUS, "Content-Type": OCTETS})
    assert response.status_code == 400


def test_body_larger_than_remaining_is_413_and_nothing_is_kept(server, client) -> None:
    url = create(client, server, 4)
    response = patch(client, url, 0, b"12345")
    assert response.status_code == 413
    assert response.text.startswith("ERR_SIZE_EXCEEDED: ")
    assert head(client, url).headers["upload-offset"] == "0"

    def chunked():  # no Content-Length: the limit is enforced while streaming
        yield b"12"
        yield b"345"

    response = patch(client, url, 0, chunked())
    assert response.status_code == 413
    assert head(client, url).headers["upload-offset"] == "0"


def test_unknown_and_malformed_ids(server, client: httpx.Client) -> None:
    for path in ("0" * 32, "not-an-id", "..%2f..%2fetc%2fpasswd", "A" * 32):
        response = client.head(server.endpoint + path, headers=TUS)
        assert response.status_code == 404
        assert "upload-offset" not in response.headers
        response = patch(client, server.endpoint + path, 0, b"x")
        assert response.status_code == 404
        assert response.text.startswith("ERR_UPLOAD_NOT_FOUND: ")


def test_method_not_allowed(server, client: httpx.Client) -> None:
    url = create(client, server, 1)
    response = client.put(url, headers=TUS, content=b"x")
    assert response.status_code == 405
    assert "PATCH" in response.headers["allow"]
    assert client.get(server.endpoint, headers=TUS).status_code == 405


# -- creation ---------------------------------------------------------------------------------


def test_creation_requires_a_length(server, client: httpx.Client) -> None:
    response = client.post(server.endpoint, headers=TUS)
    assert response.status_code == 400
    assert response.text.startswith("ERR_LENGTH_REQUIRED: ")
    both = client.post(
        server.endpoint, headers={**TUS, "Upload-Length": "3", "Upload-Defer-Length": "1"}
    )
    assert both.status_code == 400
    bad_defer = client.post(server.endpoint, headers={**TUS, "Upload-Defer-Length": "2"})
    assert bad_defer.status_code == 400


def test_zero_length_upload_is_complete_at_once(server, client: httpx.Client) -> None:
    url = create(client, server, 0)
    status = head(client, url)
    assert status.headers["upload-offset"] == "0"
    assert status.headers["upload-length"] == "0"
    for _ in range(2):  # the connection stays usable after an empty body
        download = client.get(url)
        assert download.status_code == 200
        assert download.content == b""


def test_metadata_is_echoed_exactly(server, client: httpx.Client) -> None:
    raw = "filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential,note aGk="
    url = create(client, server, 1, **{"Upload-Metadata": raw})
    assert head(client, url).headers["upload-metadata"] == raw


@pytest.mark.parametrize(
    "raw",
    [
        "filename not*base64",
        "filename aGVsbG8=,filename aGVsbG8=",  # duplicate key
        "filename aGVsbG8= extra",  # three fields
        ",filename aGVsbG8=",  # empty pair
        "filename aGVsbG8=,",
        "fïlename aGVsbG8=",  # non-ASCII key
        "filename aGVsbG8",  # bad padding
    ],
)
def test_malformed_metadata_is_400(server, client: httpx.Client, raw: str) -> None:
    response = client.post(
        server.endpoint,
        headers=[("Tus-Resumable", "1.0.0"), ("Upload-Length", "1"),
                 ("Upload-Metadata", raw.encode("utf-8"))],
    )  # fmt: skip
    assert response.status_code == 400, raw
    assert response.text.startswith("ERR_INVALID_METADATA: ")


def test_metadata_size_limit(make_server, client: httpx.Client) -> None:
    server = make_server("--max-metadata-size", "64")
    value = base64.b64encode(b"x" * 100).decode()
    response = client.post(
        server.endpoint, headers={**TUS, "Upload-Length": "1", "Upload-Metadata": f"k {value}"}
    )
    assert response.status_code == 400
    assert "64" in response.text


def test_creation_with_upload(server, client: httpx.Client) -> None:
    response = client.post(
        server.endpoint,
        headers={**TUS, "Upload-Length": "10", "Content-Type": OCTETS},
        content=b"0123456",
    )
    assert response.status_code == 201
    assert response.headers["upload-offset"] == "7"
    url = response.headers["location"]
    assert patch(client, url, 7, b"789").headers["upload-offset"] == "10"
    assert client.get(url).content == b"0123456789"


def test_creation_with_upload_and_checksum(server, client: httpx.Client) -> None:
    body = b"payload"
    good = base64.b64encode(hashlib.sha256(body).digest()).decode()
    response = client.post(
        server.endpoint,
        headers={**TUS, "Upload-Length": "7", "Content-Type": OCTETS,
                 "Upload-Checksum": f"sha256 {good}"},
        content=body,
    )  # fmt: skip
    assert response.status_code == 201
    assert response.headers["upload-offset"] == "7"
    bad = client.post(
        server.endpoint,
        headers={**TUS, "Upload-Length": "7", "Content-Type": OCTETS,
                 "Upload-Checksum": f"sha256 {base64.b64encode(b'x' * 32).decode()}"},
        content=body,
    )  # fmt: skip
    assert bad.status_code == 460


def test_creation_with_body_needs_offset_content_type(server, client: httpx.Client) -> None:
    response = client.post(
        server.endpoint,
        headers={**TUS, "Upload-Length": "3", "Content-Type": "text/plain"},
        content=b"abc",
    )
    assert response.status_code == 415


def test_deferred_length(server, client: httpx.Client) -> None:
    url = create(client, server, None, **{"Upload-Defer-Length": "1"})
    status = head(client, url)
    assert status.headers["upload-defer-length"] == "1"
    assert "upload-length" not in status.headers
    assert patch(client, url, 0, b"abc").headers["upload-offset"] == "3"
    shorter = patch(client, url, 3, b"d", **{"Upload-Length": "2"})
    assert shorter.status_code == 400
    final = patch(client, url, 3, b"def", **{"Upload-Length": "6"})
    assert final.status_code == 204
    assert final.headers["upload-offset"] == "6"
    status = head(client, url)
    assert status.headers["upload-length"] == "6"
    assert "upload-defer-length" not in status.headers
    changed = patch(client, url, 6, b"", **{"Upload-Length": "7"})
    assert changed.status_code == 409
    assert client.get(url).content == b"abcdef"


def test_deferred_length_declared_alone_then_data(server, client: httpx.Client) -> None:
    url = create(client, server, None, **{"Upload-Defer-Length": "1"})
    assert patch(client, url, 0, b"", **{"Upload-Length": "2"}).status_code == 204
    assert head(client, url).headers["upload-length"] == "2"
    assert patch(client, url, 0, b"hi").headers["upload-offset"] == "2"


# -- location, method override, CORS ------------------------------------------------------------


def test_location_forms(make_server, client: httpx.Client) -> None:
    plain = make_server()
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "uploads.example.com"}
    response = client.post(plain.endpoint, headers={**TUS, "Upload-Length": "1", **forwarded})
    assert response.headers["location"].startswith(f"http://127.0.0.1:{plain.port}/files/")

    proxied = make_server("--trust-proxy")
    response = client.post(proxied.endpoint, headers={**TUS, "Upload-Length": "1", **forwarded})
    assert response.headers["location"].startswith("https://uploads.example.com/files/")
    evil = client.post(
        proxied.endpoint,
        headers={**TUS, "Upload-Length": "1", "X-Forwarded-Host": "evil.com/phish?"},
    )
    assert evil.status_code == 400

    relative = make_server("--relative-location")
    response = client.post(relative.endpoint, headers={**TUS, "Upload-Length": "1"})
    assert response.headers["location"].startswith("/files/")


def test_method_override(server, client: httpx.Client) -> None:
    url = create(client, server, 5)
    response = client.post(
        url,
        content=b"hello",
        headers={**TUS, "X-HTTP-Method-Override": "PATCH", "Upload-Offset": "0",
                 "Content-Type": OCTETS},
    )  # fmt: skip
    assert response.status_code == 204
    assert response.headers["upload-offset"] == "5"
    deleted = client.post(url, headers={**TUS, "X-HTTP-Method-Override": "DELETE"})
    assert deleted.status_code == 204
    assert head(client, url).status_code == 410


def test_cors_preflight_and_exposed_headers(make_server, client: httpx.Client) -> None:
    server = make_server("--cors-origins", "https://app.example")
    preflight = client.options(
        server.endpoint,
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "tus-resumable,upload-offset,upload-checksum,"
            "upload-concat,upload-metadata,upload-length,upload-defer-length,content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert "PATCH" in preflight.headers["access-control-allow-methods"]
    denied = client.options(
        server.endpoint,
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "PATCH"},
    )
    assert denied.status_code == 400
    response = client.post(
        server.endpoint,
        headers={**TUS, "Upload-Length": "1", "Origin": "https://app.example"},
    )
    exposed = {
        h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")
    }
    wanted = {"location", "upload-offset", "upload-length", "upload-expires", "upload-metadata",
              "tus-resumable", "tus-version", "tus-extension", "tus-max-size",
              "tus-checksum-algorithm", "upload-concat", "upload-defer-length"}  # fmt: skip
    assert wanted <= exposed


# -- expiration and termination ----------------------------------------------------------------


def test_upload_expires_is_an_http_date(server, client: httpx.Client) -> None:
    response = client.post(server.endpoint, headers={**TUS, "Upload-Length": "3"})
    expires = response.headers["upload-expires"]
    assert expires.endswith(" GMT")
    parsedate_to_datetime(expires)  # raises if not an HTTP-date
    url = response.headers["location"]
    after_patch = patch(client, url, 0, b"a").headers["upload-expires"]
    assert parsedate_to_datetime(after_patch) >= parsedate_to_datetime(expires)
    assert head(client, url).headers["upload-expires"] == after_patch


def test_expired_upload_is_410_and_its_bytes_are_gone(make_server, client) -> None:
    server = make_server("--expiration", "1s", "--sweep-interval", "0.3")
    url = create(client, server, 10)
    patch(client, url, 0, b"abc")
    data_file = server.upload_path(url)
    assert data_file.exists()
    import time

    deadline = time.monotonic() + 15
    while head(client, url).status_code != 410 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert head(client, url).status_code == 410
    refused = patch(client, url, 3, b"d")  # a HEAD has no body: the code comes with the PATCH
    assert refused.status_code == 410
    assert refused.text.startswith("ERR_UPLOAD_GONE: "), refused.text
    assert not data_file.exists()


def test_termination(server, client: httpx.Client) -> None:
    url = create(client, server, 10)
    patch(client, url, 0, b"abc")
    response = client.delete(url, headers=TUS)
    assert response.status_code == 204
    assert not server.upload_path(url).exists()
    assert head(client, url).status_code == 410
    assert patch(client, url, 3, b"x").status_code == 410
    assert client.delete(url, headers=TUS).status_code == 410
    assert client.get(url).status_code == 410


# -- checksum ---------------------------------------------------------------------------------


def _digest(algorithm: str, data: bytes) -> str:
    raw = (
        zlib.crc32(data).to_bytes(4, "big")
        if algorithm == "crc32"
        else hashlib.new(algorithm, data).digest()
    )
    return f"{algorithm} {base64.b64encode(raw).decode()}"


@pytest.mark.parametrize("algorithm", ["md5", "sha1", "sha256", "sha512", "crc32"])
def test_checksum_accepts_matching_and_rejects_mismatch(server, client, algorithm) -> None:
    url = create(client, server, 8)
    assert (
        patch(
            client, url, 0, b"abcd", **{"Upload-Checksum": _digest(algorithm, b"abcd")}
        ).status_code
        == 204
    )
    wrong = patch(client, url, 4, b"efgh", **{"Upload-Checksum": _digest(algorithm, b"efgX")})
    assert wrong.status_code == 460
    assert wrong.text.startswith("ERR_CHECKSUM_MISMATCH: ")
    assert head(client, url).headers["upload-offset"] == "4"
    assert server.upload_path(url).stat().st_size == 4  # the rejected bytes are gone from disk
    assert (
        patch(
            client, url, 4, b"efgh", **{"Upload-Checksum": _digest(algorithm, b"efgh")}
        ).status_code
        == 204
    )
    assert client.get(url).content == b"abcdefgh"


def test_checksum_algorithm_names_are_case_insensitive(server, client: httpx.Client) -> None:
    url = create(client, server, 2)
    value = _digest("sha1", b"ok").replace("sha1", "SHA1")
    assert patch(client, url, 0, b"ok", **{"Upload-Checksum": value}).status_code == 204


def test_request_trailers_never_reach_the_application(server, client: httpx.Client) -> None:
    """Why checksum-trailer is not advertised: ASGI has no event that carries request trailers
    (uvicorn, granian and hypercorn all follow it). A trailer that arrives while the application
    is already streaming the body is never seen: here a wrong checksum in the trailer is
    accepted, because the server cannot know it was sent."""
    from tests.helpers import RawRequest, wait_for

    size = 3 << 20
    url = create(client, server, size)
    request = RawRequest(
        server, "PATCH", url,
        {**TUS, "Upload-Offset": "0", "Content-Type": OCTETS, "Transfer-Encoding": "chunked",
         "Trailer": "Upload-Checksum"},
    )  # fmt: skip
    request.send(f"{size:x}\r\n".encode() + b"d" * (size - 10))
    wait_for(lambda: server.upload_path(url).exists() and server.upload_path(url).stat().st_size)
    wrong = base64.b64encode(hashlib.sha1(b"nope").digest()).decode()
    request.send(b"d" * 10 + b"\r\n0\r\nUpload-Checksum: sha1 " + wrong.encode() + b"\r\n\r\n")
    assert request.status() == 204
    request.close()
    assert "checksum-trailer" not in client.options(server.endpoint).headers["tus-extension"]


def test_max_active_uploads(make_server, client: httpx.Client) -> None:
    server = make_server("--max-active-uploads", "2")
    first = create(client, server, 3)
    create(client, server, 3)
    refused = client.post(server.endpoint, headers={**TUS, "Upload-Length": "3"})
    assert refused.status_code == 503
    assert refused.text.startswith("ERR_TOO_MANY_UPLOADS: ")
    assert refused.headers["retry-after"].isdigit()
    patch(client, first, 0, b"abc")  # a finished upload frees its place
    assert client.post(server.endpoint, headers={**TUS, "Upload-Length": "3"}).status_code == 201


def test_settings_from_a_toml_file_and_the_environment(tmp_path, client: httpx.Client) -> None:
    import os
    import subprocess
    import time

    from tests.helpers import HAUL, free_port

    config = tmp_path / "haul.toml"
    config.write_text('[haul]\nmax-size = "2KiB"\nbase_path = "/uploads/"\n')
    port = free_port()
    env = {**os.environ, "HAUL_MAX_METADATA_SIZE": "10", "HAUL_PORT": str(port)}
    proc = subprocess.Popen([HAUL, "serve", "--config", str(config), "--data-dir",
                             str(tmp_path / "d")], env=env)  # fmt: skip
    try:
        endpoint = f"http://127.0.0.1:{port}/uploads/"
        deadline = time.monotonic() + 20
        while True:
            try:
                options = client.options(endpoint)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert options.headers["tus-max-size"] == "2048"  # from the file
        meta = {**TUS, "Upload-Length": "1", "Upload-Metadata": "filename aGVsbG8udHh0"}
        long_meta = client.post(endpoint, headers=meta)
        assert long_meta.status_code == 400  # from the environment: 10 bytes of metadata at most
        created = client.post(endpoint, headers={**TUS, "Upload-Length": "1"})
        assert created.headers["location"].startswith(f"http://127.0.0.1:{port}/uploads/")
    finally:
        proc.terminate()
        proc.wait(10)
