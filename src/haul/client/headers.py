"""The header values the client writes and reads. Reading is forgiving where the server's own
codecs (haul.wire) are strict: those refuse a bad request, while a client should make what it
can of any tus server's answer, and never raise anything but a HaulClientError over it."""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata

import httpx

from haul.client.errors import HaulClientError

SHA256 = "sha-256"
_REPR_SHA256 = re.compile(r"(?:^|,)\s*sha-256\s*=\s*:([^:]*):")
_UNSAFE_NAME = re.compile(r'[\x00-\x1f\x7f"\\/:*?<>|;]')


def encode_metadata(metadata: dict[str, bytes]) -> str:
    """``Upload-Metadata``: comma-separated ``key base64value`` pairs (the value optional)."""
    return ",".join(
        f"{key} {base64.b64encode(value).decode('ascii')}" if value else key
        for key, value in metadata.items()
    )


def decode_metadata(raw: str) -> dict[str, str]:
    """``Upload-Metadata`` as text; a pair that is not valid base64 is left out."""
    found: dict[str, str] = {}
    for pair in raw.split(","):
        key, _, encoded = pair.strip(" \t").partition(" ")
        if not key:
            continue
        try:
            value = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            continue
        found.setdefault(key, value.decode("utf-8", "replace"))
    return found


def format_repr_digest(sha256_hex: str) -> str:
    """RFC 9530 ``Repr-Digest`` declaring a SHA-256."""
    return f"{SHA256}=:{base64.b64encode(bytes.fromhex(sha256_hex)).decode()}:"


def reported_sha256(value: str | None) -> str | None:
    """The SHA-256 (hex) a server's ``Repr-Digest`` reports, None when it reports none; a
    sha-256 member that is not 32 bytes of base64 is an error, never a silent pass."""
    match = _REPR_SHA256.search(value or "")
    if match is None:
        return None
    try:
        raw = base64.b64decode(match[1], validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise HaulClientError(f"the server reported a malformed Repr-Digest: {value!r}")
    return raw.hex()


def header_int(response: httpx.Response, name: str) -> int | None:
    """A non-negative integer header of the server's answer; None when absent."""
    value = response.headers.get(name)
    if value is None:
        return None
    if not value.strip().isdigit():
        raise HaulClientError(f"{_answer(response)} has {name}: {value!r}, not a number")
    return int(value)


def required_int(response: httpx.Response, name: str) -> int:
    value = header_int(response, name)
    if value is None:
        raise HaulClientError(f"{_answer(response)} lacks {name}")
    return value


def required_header(response: httpx.Response, name: str) -> str:
    value = response.headers.get(name)
    if value is None:
        raise HaulClientError(f"{_answer(response)} lacks {name}")
    return str(value)


def _answer(response: httpx.Response) -> str:
    return f"the server's answer to {response.request.method} {response.request.url}"


def safe_filename(name: str, fallback: str = "download") -> str:
    """A local file name from a server's metadata: no separators, controls or leading dots."""
    cleaned = unicodedata.normalize("NFC", name)
    cleaned = "".join(ch for ch in cleaned if unicodedata.category(ch)[0] != "C")
    cleaned = _UNSAFE_NAME.sub("_", cleaned).strip(" .")
    return cleaned[:200] or fallback
