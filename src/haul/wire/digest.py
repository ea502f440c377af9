"""Whole-upload digests: RFC 9530 ``Repr-Digest`` and the ``sha256`` metadata key."""

from __future__ import annotations

import base64
import binascii
import re

from haul.errors import InvalidHeader, InvalidMetadata

SHA256 = "sha-256"
# One dictionary member of RFC 8941 structured fields whose value is a byte sequence.
_MEMBER = re.compile(r"\s*([a-z][a-z0-9_.*-]*)\s*=\s*:([A-Za-z0-9+/=]*):\s*")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def parse_repr_digest(value: str) -> dict[str, bytes]:
    """``sha-256=:base64:, sha-512=:base64:`` → {algorithm: digest}. Malformed → 400."""
    found: dict[str, bytes] = {}
    for member in value.split(","):
        match = _MEMBER.fullmatch(member)
        if not match:
            raise InvalidHeader(f"Repr-Digest member {member.strip()!r} is not name=:base64:")
        try:
            found[match[1]] = base64.b64decode(match[2], validate=True)
        except (binascii.Error, ValueError):
            raise InvalidHeader(f"Repr-Digest value for {match[1]} is not base64") from None
    return found


def sha256_from_repr_digest(value: str) -> str:
    """The SHA-256 (hex) a ``Repr-Digest`` header declares; other algorithms are not enough."""
    digests = parse_repr_digest(value)
    raw = digests.get(SHA256)
    if raw is None:
        raise InvalidHeader("Repr-Digest must include sha-256 (the digest haul verifies)")
    if len(raw) != 32:
        raise InvalidHeader("Repr-Digest sha-256 must be 32 bytes")
    return raw.hex()


def sha256_from_metadata(value: bytes) -> str:
    """The ``sha256`` metadata value (hex, or base64 of the 32 bytes) as hex."""
    text = value.decode("ascii", "replace").strip()
    if _HEX64.fullmatch(text):
        return text.lower()
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise InvalidMetadata("metadata sha256 must be 64 hex digits or base64 of 32 bytes")
    return raw.hex()


def format_repr_digest(sha256_hex: str) -> str:
    return f"{SHA256}=:{base64.b64encode(bytes.fromhex(sha256_hex)).decode()}:"
