"""tus 1.0.0 header codecs: strict parsers that raise a clear error instead of guessing."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime

from haul.errors import InvalidChecksumHeader, InvalidConcat, InvalidHeader, InvalidMetadata

TUS_VERSION = "1.0.0"
SUPPORTED_VERSIONS = (TUS_VERSION,)
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"

# 2**63 - 1 has 19 digits; anything longer cannot be a real size and would only cost CPU.
_UINT = re.compile(r"[0-9]{1,19}")
# A metadata key is any visible ASCII except the comma (the space is the key/value separator).
_META_KEY = re.compile(r"[!-+\--~]+")


def parse_uint(value: str, header: str) -> int:
    """Parse a non-negative integer header value, rejecting signs, spaces inside and overflow."""
    text = value.strip()
    if not _UINT.fullmatch(text):
        raise InvalidHeader(f"{header} must be a non-negative integer, got {value!r}")
    number = int(text)
    if number > 2**63 - 1:
        raise InvalidHeader(f"{header} is too large: {value!r}")
    return number


def parse_metadata(raw: str) -> dict[str, bytes]:
    """Decode ``Upload-Metadata``: comma-separated ``key base64value`` pairs, value optional.

    Every malformed pair is an error (400); nothing is silently dropped.
    """
    result: dict[str, bytes] = {}
    if not raw.strip():
        return result
    for pair in raw.split(","):
        item = pair.strip(" \t")
        if not item:
            raise InvalidMetadata("Upload-Metadata has an empty pair (stray comma)")
        key, sep, encoded = item.partition(" ")
        if not _META_KEY.fullmatch(key):
            raise InvalidMetadata(f"Upload-Metadata key {key!r} is empty or not printable ASCII")
        if key in result:
            raise InvalidMetadata(f"Upload-Metadata key {key!r} appears twice")
        if sep and " " in encoded:
            raise InvalidMetadata(f"Upload-Metadata value for {key!r} contains a space")
        try:
            result[key] = base64.b64decode(encoded, validate=True) if encoded else b""
        except (binascii.Error, ValueError):
            raise InvalidMetadata(
                f"Upload-Metadata value for {key!r} is not valid base64"
            ) from None
    return result


def encode_metadata(metadata: dict[str, bytes]) -> str:
    """The inverse of :func:`parse_metadata` (used by clients and tests)."""
    return ",".join(
        f"{key} {base64.b64encode(value).decode('ascii')}" if value else key
        for key, value in metadata.items()
    )


@dataclass(frozen=True)
class Concat:
    """A parsed ``Upload-Concat`` header: ``partial``, or ``final`` with its partial upload URLs."""

    partial: bool
    parts: tuple[str, ...] = ()


def parse_concat(value: str) -> Concat:
    text = value.strip()
    if text == "partial":
        return Concat(partial=True)
    kind, sep, urls = text.partition(";")
    if kind.strip() != "final" or not sep:
        raise InvalidConcat(f"Upload-Concat must be 'partial' or 'final;<urls>', got {value!r}")
    parts = tuple(urls.split())
    if not parts:
        raise InvalidConcat("Upload-Concat final lists no partial uploads")
    return Concat(partial=False, parts=parts)


def parse_checksum(value: str) -> tuple[str, bytes]:
    """Parse ``Upload-Checksum: <algorithm> <base64 digest>``."""
    algorithm, sep, encoded = value.strip().partition(" ")
    if not sep or not algorithm or not encoded or " " in encoded.strip():
        raise InvalidChecksumHeader(
            f"Upload-Checksum must be '<algorithm> <base64>', got {value!r}"
        )
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidChecksumHeader("Upload-Checksum digest is not valid base64") from None
    return algorithm.lower(), digest


def http_date(moment: datetime) -> str:
    """RFC 9110 IMF-fixdate, as ``Upload-Expires`` requires."""
    return format_datetime(moment, usegmt=True)
