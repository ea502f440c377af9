"""The state of an unfinished S3 upload, as the object S3 itself holds beside the bytes: the
multipart upload's id, the parts committed so far and the tail (the last bytes, too few to be
a part yet). Typed here so that no code reads it by string keys.

The object is one line of JSON, then the tail's bytes: the tail and the parts list change
together in one PUT. Earlier releases kept the tail in an object of its own, named by the
JSON's ``tail`` field; such states are still read (the JSON shape is unchanged), so uploads in
flight survive an upgrade. A partial upload *placed* into its final upload's multipart upload
(see s3_concat) also names where its parts go.
"""

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
    """A tail in an object of its own (the format of earlier releases)."""

    key: str
    size: int


@dataclass(frozen=True)
class Placement:
    """Where a placed partial's parts go: part ``first`` on of ``key``'s multipart upload
    ``mpu``, each ``unit`` bytes (the last one of the final's may be shorter)."""

    key: str
    mpu: str
    first: int
    unit: int


@dataclass(frozen=True)
class S3State:
    mpu: str  # the multipart upload's id in the store
    parts: tuple[Part, ...] = ()
    tail: Tail | None = None
    tail_data: bytes = b""  # the tail itself, kept in the state object
    placed: Placement | None = None
    extra: dict[str, object] = field(default_factory=dict, compare=False)  # kept as found

    @property
    def held(self) -> int:
        """Bytes this state accounts for: its parts and its tail."""
        return (
            sum(p.size for p in self.parts)
            + (self.tail.size if self.tail else 0)
            + len(self.tail_data)
        )

    @property
    def next_number(self) -> int:
        """The number the next part of this upload gets."""
        first = self.placed.first if self.placed else 1
        return first + len(self.parts)

    def with_parts(self, parts: tuple[Part, ...], tail_data: bytes = b"") -> S3State:
        """The state once ``parts`` are sent and ``tail_data`` is what is left over."""
        return replace(self, parts=parts, tail=None, tail_data=tail_data)

    def to_json(self) -> bytes:
        fields: dict[str, object] = {
            **self.extra,
            "mpu": self.mpu,
            "parts": [[p.number, p.size, p.etag] for p in self.parts],
            "tail": [self.tail.key, self.tail.size] if self.tail else None,
        }
        if self.tail_data:
            fields["inline"] = len(self.tail_data)
        if self.placed:
            p = self.placed
            fields["placed"] = [p.key, p.mpu, p.first, p.unit]
        return json.dumps(fields).encode()

    def encode(self) -> bytes:
        """The state object's body: the JSON line, then the tail's bytes."""
        return self.to_json() + b"\n" + self.tail_data if self.tail_data else self.to_json()

    @classmethod
    def decode(cls, body: bytes) -> S3State:
        header, _, tail_data = body.partition(b"\n")  # JSON as written holds no raw newline
        state = cls.from_json(header)
        inline = int(str(state.extra.pop("inline", 0)))
        if inline != len(tail_data):
            raise ValueError(f"the state holds {len(tail_data)} tail bytes, it says {inline}")
        return replace(state, tail_data=tail_data)

    @classmethod
    def from_json(cls, data: bytes) -> S3State:
        raw = json.loads(data)
        tail = raw.pop("tail", None)
        parts = raw.pop("parts", [])
        placed = raw.pop("placed", None)
        return cls(
            mpu=str(raw.pop("mpu")),
            parts=tuple(Part(int(n), int(size), str(etag)) for n, size, etag in parts),
            tail=Tail(str(tail[0]), int(tail[1])) if tail else None,
            placed=Placement(str(placed[0]), str(placed[1]), int(placed[2]), int(placed[3]))
            if placed
            else None,
            extra=raw,
        )
