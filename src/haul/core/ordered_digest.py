"""The SHA-256 of a parallel upload, computed while its partials arrive.

A final upload's digest is the SHA-256 of its partials' bytes in order, and SHA-256 cannot be
combined from the parts' own digests: computed when the final upload is created, it reads every
byte back at the very end (about a second per 1.5 GB here) while the client waits. A client
that tags each partial with its place in the file (metadata ``haul-part: <group> <index>``) lets
the server hash each partial as soon as it and every one before it are complete, so that only
the last few are left when the final upload comes.

Best effort, never trusted blindly: the digest is used only when the final upload lists exactly
the partials hashed so far, in that order, as its first ones (the rest are hashed then). A
partial completed on another node, a restart, a resumed client with a new group, or any other
order simply falls back to reading everything back.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from haul.core.interfaces import StoredBytesMissing
from haul.core.models import Upload
from haul.core.pump import digest_stream
from haul.wire.checksums import Hasher

PART_KEY = "haul-part"
MAX_GROUPS = 256  # parallel uploads followed at once; the least recently used goes first
_TAG = re.compile(r"([A-Za-z0-9_-]{1,64}) (\d{1,7})")


def part_tag(upload: Upload) -> tuple[str, int] | None:
    """(group, index) from a partial's ``haul-part`` metadata, or None."""
    raw = upload.metadata.get(PART_KEY)
    match = _TAG.fullmatch(raw.decode("ascii", "replace")) if raw else None
    return (match[1], int(match[2])) if match else None


@dataclass
class _Group:
    hasher: Hasher = field(default_factory=hashlib.sha256)
    hashed: list[str] = field(default_factory=list)  # partial ids in the hasher, in order
    waiting: dict[int, Upload] = field(default_factory=dict)  # complete, not yet their turn
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    task: asyncio.Task[None] | None = None
    broken: bool = False  # a read failed midway: the hasher's state is of no use
    used: float = field(default_factory=time.monotonic)


class OrderedDigests:
    def __init__(self, read: Callable[[Upload], AsyncIterator[bytes]]) -> None:
        self._read = read
        self._groups: dict[tuple[str, str], _Group] = {}

    def completed(self, part: Upload) -> None:
        """A partial is complete: hash it now if every partial before it in its group is."""
        tag = part_tag(part)
        if tag is None:
            return
        key = (part.owner, tag[0])
        group = self._groups.get(key)
        if group is None:
            if len(self._groups) >= MAX_GROUPS:
                oldest = min(self._groups, key=lambda k: self._groups[k].used)
                del self._groups[oldest]
            group = self._groups[key] = _Group()
        group.used = time.monotonic()
        if tag[1] >= len(group.hashed):
            group.waiting[tag[1]] = part
        if group.task is None or group.task.done():
            group.task = asyncio.create_task(self._advance(key, group))

    async def _advance(self, key: tuple[str, str], group: _Group) -> None:
        async with group.lock:
            try:
                while not group.broken and (part := group.waiting.pop(len(group.hashed), None)):
                    await digest_stream(self._read(part), group.hasher)
                    group.hashed.append(part.id)
            except Exception:  # e.g. the partial was deleted meanwhile
                group.broken = True
                if self._groups.get(key) is group:
                    del self._groups[key]

    async def digest_of(self, parts: Sequence[Upload]) -> tuple[str, int] | None:
        """The hex SHA-256 of ``parts``' bytes in this order, and how many of them had been
        hashed ahead, when a group covers their beginning; None otherwise."""
        tag = part_tag(parts[0]) if parts else None
        if tag is None or tag[1] != 0:
            return None
        key = (parts[0].owner, tag[0])
        group = self._groups.get(key)
        if group is None:
            return None
        async with group.lock:
            ids = [part.id for part in parts]
            if group.broken or self._groups.get(key) is not group:
                return None
            if group.hashed != ids[: len(group.hashed)]:
                return None
            del self._groups[key]  # its hasher now belongs to this final upload
            ahead = len(group.hashed)
            try:
                for part in parts[ahead:]:
                    await digest_stream(self._read(part), group.hasher)
            except StoredBytesMissing:
                # A partial with no bytes of its own (written straight into the final's place
                # by the storage): the final upload's bytes are read instead.
                return None
            return group.hasher.digest().hex(), ahead
