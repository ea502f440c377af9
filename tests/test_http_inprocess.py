"""The tus surface over the ASGI app in-process (httpx's ASGI transport, in-memory backends):
the protocol's answers without a socket. The same rules are proven over real sockets by
test_tus_core.py; these run in milliseconds (the fast tier)."""

from __future__ import annotations

import base64
import hashlib

import pytest

from haul.compose import limits_from
from tests.inprocess import Heard, asgi_client, memory_service, memory_settings

pytestmark = pytest.mark.fast
TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {**TUS, "Content-Type": "application/offset+octet-stream"}


async def test_a_whole_upload_over_the_app() -> None:
    service = memory_service()
    heard = Heard()
    service.events.subscribe(heard)
    async with asgi_client(service) as http:
        options = await http.options("/files/")
        assert options.status_code == 204
        assert "concatenation" in options.headers["tus-extension"].split(",")
        created = await http.post("/files/", headers={**TUS, "Upload-Length": "11"})
        assert created.status_code == 201
        url = created.headers["location"]
        first = await http.patch(url, headers={**OCTETS, "Upload-Offset": "0"}, content=b"hello")
        assert (first.status_code, first.headers["upload-offset"]) == (204, "5")
        status = await http.head(url, headers=TUS)
        assert status.headers["upload-offset"] == "5"
        assert status.headers["cache-control"] == "no-store"
        last = await http.patch(url, headers={**OCTETS, "Upload-Offset": "5"}, content=b" world")
        assert last.headers["upload-offset"] == "11"
        digest = base64.b64encode(hashlib.sha256(b"hello world").digest()).decode()
        assert (await http.head(url, headers=TUS)).headers["repr-digest"] == f"sha-256=:{digest}:"
        assert (await http.get(url)).content == b"hello world"
        assert (await http.delete(url, headers=TUS)).status_code == 204
        assert (await http.head(url, headers=TUS)).status_code == 410
    assert heard.kinds() == ["Created", "Progress", "Progress", "Finished", "Terminated"]


async def test_bad_requests_get_their_codes() -> None:
    async with asgi_client(memory_service()) as http:
        no_version = await http.post("/files/", headers={"Upload-Length": "3"})
        assert no_version.status_code == 412
        assert no_version.headers["tus-version"] == "1.0.0"
        url = (await http.post("/files/", headers={**TUS, "Upload-Length": "3"})).headers[
            "location"
        ]
        wrong_type = await http.patch(
            url, headers={**TUS, "Upload-Offset": "0", "Content-Type": "text/plain"}, content=b"a"
        )
        assert wrong_type.status_code == 415
        wrong_offset = await http.patch(url, headers={**OCTETS, "Upload-Offset": "1"}, content=b"a")
        assert wrong_offset.status_code == 409
        assert wrong_offset.text.startswith("ERR_MISMATCHED_OFFSET: ")
        too_long = await http.patch(url, headers={**OCTETS, "Upload-Offset": "0"}, content=b"abcd")
        assert too_long.status_code == 413
        missing = await http.head("/files/" + "0" * 32, headers=TUS)
        assert missing.status_code == 404
        assert missing.text == ""  # HEAD answers carry no body
        assert (await http.head(url, headers=TUS)).headers["upload-offset"] == "0"


async def test_limits_from_the_settings_apply() -> None:
    settings = memory_settings(max_size="1KiB")
    service = memory_service(limits_from(settings))
    async with asgi_client(service, settings) as http:
        assert (await http.options("/files/")).headers["tus-max-size"] == "1024"
        too_big = await http.post("/files/", headers={**TUS, "Upload-Length": "1025"})
        assert too_big.status_code == 413
        assert too_big.text.startswith("ERR_MAX_SIZE_EXCEEDED: ")


def _repr_digest(data: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode() + ":"


async def test_a_final_declares_its_digest_after_its_creation() -> None:
    """A client that creates the final before its hash is ready declares the digest later
    with an empty PATCH; the assembly then verifies it like any declared digest."""
    async with asgi_client(memory_service()) as http:
        partial = {**TUS, "Upload-Concat": "partial"}
        parts = [
            (await http.post("/files/", headers={**partial, "Upload-Length": "3"})).headers[
                "location"
            ]
            for _ in range(2)
        ]
        final_headers = {**TUS, "Upload-Concat": "final;" + " ".join(parts)}
        final = (await http.post("/files/", headers=final_headers)).headers["location"]
        declare = {**OCTETS, "Upload-Offset": "0", "Content-Length": "0"}
        good = {**declare, "Repr-Digest": _repr_digest(b"abcdef")}
        declared = await http.patch(final, headers=good)
        assert (declared.status_code, declared.headers["upload-offset"]) == (204, "0")
        assert (await http.patch(final, headers=good)).status_code == 204  # the same again
        other = await http.patch(final, headers={**declare, "Repr-Digest": _repr_digest(b"x")})
        assert other.status_code == 409
        assert other.text.startswith("ERR_DIGEST_ALREADY_DECLARED: ")
        wrong_offset = await http.patch(final, headers={**good, "Upload-Offset": "6"})
        assert wrong_offset.status_code == 409
        assert wrong_offset.text.startswith("ERR_MISMATCHED_OFFSET: ")
        # Bytes, or an empty PATCH declaring nothing, stay refused.
        with_bytes = await http.patch(
            final, headers={**OCTETS, "Upload-Offset": "0", **good}, content=b"abc"
        )
        assert (with_bytes.status_code, with_bytes.text[:15]) == (403, "ERR_MODIFY_FINA")
        bare = await http.patch(final, headers=declare)
        assert (bare.status_code, bare.text[:15]) == (403, "ERR_MODIFY_FINA")
        for url, data in zip(parts, (b"abc", b"def"), strict=True):
            sent = await http.patch(url, headers={**OCTETS, "Upload-Offset": "0"}, content=data)
            assert sent.status_code == 204
        status = await http.head(final, headers=TUS)
        assert status.headers["upload-offset"] == "6"
        assert status.headers["repr-digest"] == _repr_digest(b"abcdef")
        after = await http.patch(final, headers={**good, "Upload-Offset": "6"})
        assert (after.status_code, after.headers["upload-offset"]) == (204, "6")


async def test_a_late_digest_the_assembled_bytes_do_not_match_fails_the_final() -> None:
    async with asgi_client(memory_service()) as http:
        partial = {**TUS, "Upload-Concat": "partial", "Upload-Length": "3"}
        part = (await http.post("/files/", headers=partial)).headers["location"]
        final_headers = {**TUS, "Upload-Concat": f"final;{part}"}
        final = (await http.post("/files/", headers=final_headers)).headers["location"]
        declare = {**OCTETS, "Upload-Offset": "0", "Content-Length": "0"}
        wrong = await http.patch(final, headers={**declare, "Repr-Digest": _repr_digest(b"xyz")})
        assert wrong.status_code == 204
        sent = await http.patch(part, headers={**OCTETS, "Upload-Offset": "0"}, content=b"abc")
        assert sent.status_code == 204
        # Declared first, verified at the assembly: the final is discarded.
        assert (await http.head(final, headers=TUS)).status_code in (410, 422)
        assert (await http.head(final, headers=TUS)).status_code == 410
        # Declared after the assembly: verified against the bytes already hashed.
        part = (await http.post("/files/", headers=partial)).headers["location"]
        await http.patch(part, headers={**OCTETS, "Upload-Offset": "0"}, content=b"abc")
        final_headers = {**TUS, "Upload-Concat": f"final;{part}"}
        final = (await http.post("/files/", headers=final_headers)).headers["location"]
        assert (await http.head(final, headers=TUS)).headers["upload-offset"] == "3"
        late = {**declare, "Upload-Offset": "3", "Repr-Digest": _repr_digest(b"xyz")}
        refused = await http.patch(final, headers=late)
        assert (refused.status_code, refused.text[:19]) == (422, "ERR_DIGEST_MISMATCH")
        assert (await http.head(final, headers=TUS)).status_code == 410
