"""Generic HTTP helpers for downloads: byte ranges and safe Content-Disposition values."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)")


def _unsatisfiable(message: str, headers: dict[str, str]) -> Exception:
    # Imported when needed: haul's client shares these codecs and loads nothing of the server.
    from haul.errors import RangeNotSatisfiable

    return RangeNotSatisfiable(message, headers=headers)


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Return the inclusive byte range a single-range ``Range`` header asks for.

    ``None`` means "serve the whole representation": no usable range (RFC 9110 allows ignoring
    multi-range or malformed headers). An unsatisfiable range raises 416.
    """
    match = _RANGE.fullmatch(header.strip())
    if not match or (not match[1] and not match[2]):
        return None
    first, last = match[1], match[2]
    if len(first) > 19 or len(last) > 19:
        return None
    if not first:  # suffix range: the last N bytes
        length = int(last)
        if length == 0 or size == 0:
            raise _unsatisfiable(
                f"cannot serve the last {length} bytes of {size}",
                headers={"Content-Range": f"bytes */{size}"},
            )
        return max(0, size - length), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None  # invalid range-spec: ignored, the whole body is served
    if start >= size:
        raise _unsatisfiable(
            f"range starts at {start}, size is {size}", headers={"Content-Range": f"bytes */{size}"}
        )
    return start, min(end, size - 1)


_UNSAFE_NAME = re.compile(r'[\x00-\x1f\x7f"\\/:*?<>|;]')


def safe_filename(name: str, fallback: str = "download") -> str:
    """A filename safe in any header, log line or file system (no separators or controls)."""
    cleaned = unicodedata.normalize("NFC", name)
    cleaned = "".join(ch for ch in cleaned if unicodedata.category(ch)[0] != "C")
    cleaned = _UNSAFE_NAME.sub("_", cleaned).strip(" .")
    return cleaned[:200] or fallback


def content_disposition(name: str, *, inline: bool = False) -> str:
    """RFC 6266 value with an ASCII fallback and the exact UTF-8 name in ``filename*``."""
    safe = safe_filename(name)
    ascii_name = safe.encode("ascii", "replace").decode("ascii").replace("?", "_")
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(safe, safe='')}"


IDEMPOTENCY_KEY_MAX = 255


def parse_idempotency_key(header: str) -> str:
    """The key of an ``Idempotency-Key`` header (draft-ietf-httpapi-idempotency-key-header):
    a structured-field string, or the same characters bare as many clients send them.
    Raises ValueError for anything else."""
    key = header.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX:
        raise ValueError(f"an Idempotency-Key has 1 to {IDEMPOTENCY_KEY_MAX} characters")
    if not all(" " < c <= "~" and c not in '"\\' for c in key):
        raise ValueError("an Idempotency-Key is printable ASCII without spaces, quotes or \\")
    return key
