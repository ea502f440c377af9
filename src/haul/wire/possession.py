"""Proof of possession for instant uploads across owners.

Knowing a digest is not knowing the content. Before a client may reuse content another owner
stored, the server names a few random byte ranges and a fresh nonce; only a client that holds
the bytes can answer with SHA-256(nonce || the ranges' bytes). Each challenge allows one answer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

RANGES = 8
RANGE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Challenge:
    nonce: bytes
    ranges: tuple[tuple[int, int], ...]  # inclusive (first, last) byte positions
    source: str  # the upload whose bytes the answer is checked against

    @classmethod
    def new(cls, length: int, source: str) -> Challenge:
        if length <= RANGES * RANGE_BYTES:
            ranges: list[tuple[int, int]] = [(0, length - 1)]  # small: all of it
        else:
            starts = sorted(secrets.randbelow(length - RANGE_BYTES + 1) for _ in range(RANGES))
            ranges = [(start, start + RANGE_BYTES - 1) for start in starts]
        return cls(secrets.token_bytes(16), tuple(ranges), source)

    def header(self) -> str:
        """``Haul-Challenge: <base64 nonce> <first>-<last>,<first>-<last>,...``"""
        spans = ",".join(f"{a}-{b}" for a, b in self.ranges)
        return f"{base64.b64encode(self.nonce).decode()} {spans}"

    @classmethod
    def parse_header(cls, value: str) -> Challenge:
        nonce, _, spans = value.strip().partition(" ")
        ranges = tuple(
            (int(a), int(b)) for a, _, b in (span.partition("-") for span in spans.split(","))
        )
        return cls(base64.b64decode(nonce), ranges, "")

    def to_json(self) -> str:
        return json.dumps({"nonce": self.nonce.hex(), "ranges": self.ranges, "source": self.source})

    @classmethod
    def from_json(cls, text: str) -> Challenge:
        data = json.loads(text)
        ranges = tuple((int(a), int(b)) for a, b in data["ranges"])
        return cls(bytes.fromhex(data["nonce"]), ranges, str(data["source"]))


def answer(nonce: bytes, blocks: Iterable[bytes]) -> bytes:
    digest = hashlib.sha256(nonce)
    for block in blocks:
        digest.update(block)
    return digest.digest()


def matches(expected: bytes, given: bytes) -> bool:
    return hmac.compare_digest(expected, given)
