"""Checksum algorithms offered for ``Upload-Checksum``, all incremental."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable
from typing import Protocol


class Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def digest(self) -> bytes: ...


class Crc32:
    """CRC-32 (IEEE), digest as 4 big-endian bytes, the form S3's x-amz-checksum-crc32 uses."""

    def __init__(self) -> None:
        self._value = 0

    def update(self, data: bytes, /) -> None:
        self._value = zlib.crc32(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(4, "big")


ALGORITHMS: dict[str, Callable[[], Hasher]] = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "sha512": hashlib.sha512,
    "md5": hashlib.md5,
    "crc32": Crc32,
}


def new_hasher(algorithm: str) -> Hasher | None:
    factory = ALGORITHMS.get(algorithm)
    return factory() if factory else None
