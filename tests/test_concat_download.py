"""Concatenation (and concatenation-unfinished) and downloads."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from haul.wire.digest import format_repr_digest
from tests.helpers import TUS, create, head, patch, wait_for


def _partial(client: httpx.Client, server, data: bytes | None, length: int | None = None) -> str:
    size = len(data) if data is not None else length
    url = create(client, server, size, **{"Upload-Concat": "partial"})
    if data:
        assert patch(client, url, 0, data).status_code == 204
    return url


def _final(client: httpx.Client, server, *urls: str, **headers: str) -> httpx.Response:
    return client.post(
        server.endpoint, headers={**TUS, "Upload-Concat": "final;" + " ".join(urls), **headers}
    )


def test_concatenation_of_finished_partials(server, client: httpx.Client) -> None:
    a = _partial(client, server, b"hello ")
    b = _partial(client, server, b"big ")
    c = _partial(client, server, b"world")
    assert head(client, a).headers["upload-concat"] == "partial"
    # Relative and absolute partial URLs are both accepted.
    relative_b = "/files/" + b.rsplit("/", 1)[1]
    response = _final(client, server, a, relative_b, c, **{"Upload-Metadata": "filename aGkudHh0"})
    assert response.status_code == 201
    final = response.headers["location"]
    status = head(client, final)
    assert status.headers["upload-offset"] == "15"
    assert status.headers["upload-length"] == "15"
    assert status.headers["upload-concat"].startswith("final;")
    assert len(status.headers["upload-concat"].split(" ")) == 3
    assert client.get(final).content == b"hello big world"
    forbidden = patch(client, final, 15, b"x")
    assert forbidden.status_code == 403
    assert forbidden.text.startswith("ERR_MODIFY_FINAL: ")
    # By default the partials' bytes now live in the final upload only.
    assert head(client, a).status_code == 410


def test_keep_partials(make_server, client: httpx.Client) -> None:
    server = make_server("--keep-partials")
    a = _partial(client, server, b"ab")
    b = _partial(client, server, b"cd")
    first = _final(client, server, a, b).headers["location"]
    second = _final(client, server, b, a).headers["location"]
    assert client.get(first).content == b"abcd"
    assert client.get(second).content == b"cdab"
    assert client.get(a).content == b"ab"


def test_concatenation_unfinished(server, client: httpx.Client) -> None:
    a = _partial(client, server, None, length=3)
    b = _partial(client, server, None, length=2)
    response = _final(client, server, a, b)
    assert response.status_code == 201
    assert "upload-offset" not in response.headers
    final = response.headers["location"]
    status = head(client, final)
    assert status.status_code == 200
    assert "upload-offset" not in status.headers  # not finished yet
    assert client.get(final).status_code == 409
    patch(client, b, 0, b"de")
    patch(client, a, 0, b"abc")
    import time

    deadline = time.monotonic() + 10
    while "upload-offset" not in head(client, final).headers and time.monotonic() < deadline:
        time.sleep(0.05)
    status = head(client, final)
    assert status.headers["upload-offset"] == "5"
    assert status.headers["upload-length"] == "5"
    assert client.get(final).content == b"abcde"


def test_a_repeated_final_request_answers_with_the_same_upload(
    server, client: httpx.Client
) -> None:
    """A client whose final POST lost its answer (or timed out while the server verified)
    sends it again: it gets the upload the first one made, not an error nor a second one."""
    a = _partial(client, server, b"first ")
    b = _partial(client, server, b"second")
    digest = format_repr_digest(hashlib.sha256(b"first second").hexdigest())
    first = _final(client, server, a, b, **{"Repr-Digest": digest})
    assert first.status_code == 201
    again = _final(client, server, a, b, **{"Repr-Digest": digest})
    assert again.status_code == 201
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["upload-offset"] == "12"
    assert client.get(again.headers["location"]).content == b"first second"
    other = format_repr_digest(hashlib.sha256(b"something else").hexdigest())
    assert _final(client, server, a, b, **{"Repr-Digest": other}).status_code == 409
    assert _final(client, server, b, a).status_code == 400  # another order: partials are used


def test_a_repeated_unfinished_final_request_makes_no_second_final(
    server, client: httpx.Client
) -> None:
    a = _partial(client, server, None, length=3)
    b = _partial(client, server, None, length=3)
    first = _final(client, server, a, b).headers["location"]
    assert _final(client, server, a, b).headers["location"] == first
    patch(client, a, 0, b"abc")
    patch(client, b, 0, b"def")
    wait_for(lambda: head(client, first).headers.get("upload-offset") == "6", timeout=10)
    assert client.get(first).content == b"abcdef"


def test_a_final_created_before_its_digest_declares_it_later(server, client: httpx.Client) -> None:
    """The order haul's client uses: partials, then the final, then bytes, then the digest
    once the client's hash is ready, in an empty PATCH to the final."""
    a = _partial(client, server, None, length=4)
    b = _partial(client, server, None, length=4)
    final = _final(client, server, a, b).headers["location"]
    digest = format_repr_digest(hashlib.sha256(b"abcdefgh").hexdigest())
    declare = {"Content-Length": "0", "Repr-Digest": digest}
    declared = patch(client, final, 0, b"", **declare)
    assert (declared.status_code, declared.headers["upload-offset"]) == (204, "0")
    other = format_repr_digest(hashlib.sha256(b"abcdefgX").hexdigest())
    conflict = patch(client, final, 0, b"", **{**declare, "Repr-Digest": other})
    assert conflict.status_code == 409
    assert conflict.text.startswith("ERR_DIGEST_ALREADY_DECLARED: ")
    assert patch(client, final, 0, b"abcd", **{"Repr-Digest": digest}).status_code == 403
    assert patch(client, a, 0, b"abcd").status_code == 204
    assert patch(client, b, 0, b"efgh").status_code == 204
    wait_for(lambda: head(client, final).headers.get("upload-offset") == "8", timeout=10)
    assert head(client, final).headers["repr-digest"] == digest
    assert client.get(final).content == b"abcdefgh"


def test_concatenation_with_deferred_partials(server, client: httpx.Client) -> None:
    a = create(client, server, None, **{"Upload-Concat": "partial", "Upload-Defer-Length": "1"})
    final = _final(client, server, a).headers["location"]
    patch(client, a, 0, b"xyz", **{"Upload-Length": "3"})
    assert head(client, final).headers["upload-offset"] == "3"
    assert client.get(final).content == b"xyz"


@pytest.mark.parametrize(
    "value",
    ["final;", "final", "final;http://other.example/uploads/abc", "final;/files/nothex",
     "full;/files/x", "final;/files/" + "0" * 32],
)  # fmt: skip
def test_invalid_final_is_400(server, client: httpx.Client, value: str) -> None:
    response = client.post(server.endpoint, headers={**TUS, "Upload-Concat": value})
    assert response.status_code == 400, value
    assert response.text.startswith("ERR_INVALID_CONCAT: ")


def test_final_cannot_reference_a_non_partial(server, client: httpx.Client) -> None:
    plain = create(client, server, 1)
    patch(client, plain, 0, b"x")
    response = _final(client, server, plain)
    assert response.status_code == 400
    with_length = client.post(
        server.endpoint,
        headers={**TUS, "Upload-Concat": f"final;{_partial(client, server, b'a')}",
                 "Upload-Length": "1"},
    )  # fmt: skip
    assert with_length.status_code == 400


# -- downloads ------------------------------------------------------------------------------


@pytest.fixture
def stored(server, client: httpx.Client) -> str:
    url = create(
        client, server, 10,
        **{"Upload-Metadata": "filename cmVwb3J0LnBuZw==,filetype aW1hZ2UvcG5n"},  # report.png
    )  # fmt: skip
    patch(client, url, 0, b"0123456789")
    return url


def test_download_headers(stored: str, client: httpx.Client) -> None:
    response = client.get(stored)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-length"] == "10"
    assert response.headers["content-disposition"].startswith('inline; filename="report.png"')
    assert response.headers["x-content-type-options"] == "nosniff"
    etag = response.headers["etag"]
    assert client.get(stored, headers={"If-None-Match": etag}).status_code == 304


@pytest.mark.parametrize(
    ("range_header", "status", "body", "content_range"),
    [
        ("bytes=0-3", 206, b"0123", "bytes 0-3/10"),
        ("bytes=7-", 206, b"789", "bytes 7-9/10"),
        ("bytes=-2", 206, b"89", "bytes 8-9/10"),
        ("bytes=5-100", 206, b"56789", "bytes 5-9/10"),
        ("bytes=0-1,4-5", 200, b"0123456789", None),  # multiple ranges: whole body
        ("items=0-1", 200, b"0123456789", None),
        ("bytes=10-", 416, b"", "bytes */10"),
    ],
)
def test_download_ranges(stored, client, range_header, status, body, content_range) -> None:
    response = client.get(stored, headers={"Range": range_header})
    assert response.status_code == status
    if status != 416:
        assert response.content == body
    assert response.headers.get("content-range") == content_range


def test_if_range_mismatch_serves_everything(stored: str, client: httpx.Client) -> None:
    response = client.get(stored, headers={"Range": "bytes=0-1", "If-Range": '"stale"'})
    assert response.status_code == 200
    assert response.content == b"0123456789"


def test_incomplete_download_is_409(server, client: httpx.Client) -> None:
    url = create(client, server, 10)
    patch(client, url, 0, b"abc")
    response = client.get(url)
    assert response.status_code == 409
    assert response.text.startswith("ERR_UPLOAD_NOT_COMPLETE: ")


@pytest.mark.parametrize(
    ("name", "expected_ascii"),
    [
        ("../../etc/passwd", "_.._etc_passwd"),
        ('evil"\r\nSet-Cookie: x=1.txt', "evil_Set-Cookie_ x=1.txt"),
        ("résumé.pdf", "r_sum_.pdf"),
        ("...", "download"),
    ],
)
def test_download_names_are_sanitised(server, client, name: str, expected_ascii: str) -> None:
    import base64

    meta = "filename " + base64.b64encode(name.encode()).decode() + ",filetype dGV4dC9odG1s"
    url = create(client, server, 1, **{"Upload-Metadata": meta})
    patch(client, url, 0, b"x")
    response = client.get(url)
    disposition = response.headers["content-disposition"]
    assert disposition.startswith(f'attachment; filename="{expected_ascii}"')  # html: never inline
    assert "\r" not in disposition
    assert "\n" not in disposition
    assert "set-cookie" not in response.headers
    assert response.headers["content-type"] == "text/html"
