"""The SHA-256 of a completed upload, computed as cheaply as this process can: from the running
state of bytes it wrote itself, from partials hashed in order as they arrived, or else by
reading the stored bytes back (written by another process, resumed after a restart, or
concatenated: SHA-256 is not combinable)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Sequence

from haul.core.interfaces import Storage
from haul.core.models import ConcatKind, Upload
from haul.core.ordered_digest import OrderedDigests
from haul.core.pump import digest_stream
from haul.wire.checksums import Hasher

log = logging.getLogger("haul")

# Running SHA-256 states kept for uploads written sequentially in this process, so that
# completing one costs no second read. Bounded: an evicted upload is hashed from storage.
MAX_RUNNING_DIGESTS = 10_000


class Digests:
    def __init__(self, storage: Storage, *, verify: bool) -> None:
        self.storage = storage
        self.verify = verify
        self._running: dict[str, tuple[int, Hasher]] = {}
        self.ordered = OrderedDigests(
            lambda part: storage.read(part.stored_as, 0, part.length or 0)
        )

    def wanted(self, upload: Upload) -> bool:
        """A partial is hashed only when its client declared a digest: otherwise its bytes are
        hashed as part of the final upload, and hashing them twice would be wasted."""
        if upload.expected_sha256:
            return True
        return self.verify and upload.concat is not ConcatKind.PARTIAL

    def take_running(self, upload: Upload, offset: int) -> Hasher | None:
        """The running SHA-256 of bytes [0, offset), or a fresh one at 0, taken out of the
        cache: the caller puts it back only once its bytes are committed, so a refused request
        cannot leave a wrong state behind. None when this process cannot continue it (the
        upload is then hashed from storage when it completes), or needs no digest."""
        if not self.wanted(upload):
            return None
        kept = self._running.pop(upload.id, None)
        if kept is not None and kept[0] == offset:
            return kept[1]
        return hashlib.sha256() if offset == 0 else None

    def keep_running(self, upload_id: str, offset: int, hasher: Hasher) -> None:
        while len(self._running) >= MAX_RUNNING_DIGESTS:
            self._running.pop(next(iter(self._running)))
        self._running[upload_id] = (offset, hasher)

    def forget(self, upload_id: str) -> None:
        self._running.pop(upload_id, None)

    async def cheap(self, upload: Upload, parts: Sequence[Upload] = ()) -> str | None:
        """The digest when no byte needs reading back: the running state of this process, or
        partials hashed in order as they arrived. None: only a read-back can tell."""
        length = upload.length or 0
        kept = self._running.pop(upload.id, None)
        if kept is not None and kept[0] == length:
            return kept[1].digest().hex()
        ordered = await self.ordered.digest_of(parts)
        if ordered is not None:
            log.info(
                "upload %s: %d of %d partials were hashed as they arrived",
                upload.id, ordered[1], len(parts),
            )  # fmt: skip
            return ordered[0]
        return None

    async def read_back(self, upload: Upload, blocks: AsyncIterator[bytes] | None = None) -> str:
        """Written by another process, resumed after a restart, or concatenated: read it back
        (from ``blocks`` when the caller wraps the storage's stream)."""
        digest = hashlib.sha256()
        stream = blocks or self.storage.read(upload.stored_as, 0, upload.length or 0)
        await digest_stream(stream, digest)
        return digest.hexdigest()
