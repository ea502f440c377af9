"""The state of an unfinished S3 upload, as the JSON object S3 itself holds beside the bytes:
the multipart upload's id, the parts committed so far and the tail (the last bytes, too few to
be a part yet). Typed here so that no code reads it by string keys; the JSON shape is the one
earlier releases wrote, so uploads in flight survive an upgrade."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Part:
    number: int
    size: int
    etag: str


@dataclass(frozen=True)
class Tail:
    key: str
    size: int


@dataclass(frozen=True)
class S3State:
    mpu: str  # the multipart upload's id in the store
    parts: tuple[Part, ...] = ()
    tail: Tail | None = None
    extra: dict[str, object] = field(default_factory=dict, compare=False)  # kept as found

    @property
    def held(self) -> int:
        """Bytes this state accounts for: its parts and its tail."""
        return sum(p.size for p in self.parts) + (self.tail.size if self.tail else 0)

    def with_parts(self, parts: tuple[Part, ...], tail: Tail | None) -> S3State:
        return replace(self, parts=parts, tail=tail)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                **self.extra,
                "mpu": self.mpu,
                "parts": [[p.number, p.size, p.etag] for p in self.parts],
                "tail": [self.tail.key, self.tail.size] if self.tail else None,
            }
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> S3State:
        raw = json.loads(data)
        tail = raw.pop("tail", None)
        parts = raw.pop("parts", [])
        return cls(
            mpu=str(raw.pop("mpu")),
            parts=tuple(Part(int(n), int(size), str(etag)) for n, size, etag in parts),
            tail=Tail(str(tail[0]), int(tail[1])) if tail else None,
            extra=raw,
        )
