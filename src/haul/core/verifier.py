"""Verifying in the background the SHA-256 of uploads that completed with it pending.

An upload whose digest only a read-back could give (its parts went straight to an object store,
a final assembled there, a sequential upload finished on another node) completes at once; its
record says the digest is pending (``Upload.verify_at``). Every node runs a verifier: it takes
one pending upload at a time under a lease in the record store (renewed while it reads, so a
node that dies leaves the upload to another node or to its own restart), reads the bytes at the
store's speed and settles the record: the digest set (and the upload's Finished event told, so
post-finish hooks always carry a checked digest), or, when it differs from the declared one,
the upload failed and its bytes removed, as a mismatch found at once would be (a Rejected
event, and no Finished). Until then the upload has no digest, so instant upload never reuses
it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from haul.core import events
from haul.core.completion import Completion
from haul.core.interfaces import StoredBytesMissing
from haul.core.lifecycle import Lifecycle
from haul.core.models import Upload
from haul.errors import DigestMismatch, HaulError

log = logging.getLogger("haul")

# How long a verifier holds an upload before another may take it; renewed every third of it
# while reading, so only a verifier that stopped (a dead node) loses it.
LEASE = 60.0


class Verifier:
    def __init__(self, life: Lifecycle, completion: Completion, *, lease: float = LEASE) -> None:
        self.life = life
        self.completion = completion
        self.lease = lease
        self._wake = asyncio.Event()

    def nudge(self) -> None:
        """An upload completed here with its digest pending: verify it now, not at the next
        round."""
        self._wake.set()

    async def run(self, interval: float) -> None:
        """Verify pending uploads until cancelled: at once when nudged, and every ``interval``
        seconds for those other nodes left (one died, or verifies nothing)."""
        while True:
            self._wake.clear()
            try:
                while await self.verify_pending():
                    pass
            except Exception:  # the record store failing: try again at the next round
                log.exception("verification failed; retrying in %s s", interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)

    async def verify_pending(self, limit: int = 1) -> int:
        """Take up to ``limit`` pending uploads and verify them; how many were taken."""
        taken = await self.life.store.verify_claim(time.time(), self.lease, limit)
        for upload in taken:
            try:
                await self.verify(upload)
            except HaulError as failed:  # locked by a request: its lease lapses, then again
                log.warning("upload %s not verified yet: %s", upload.id, failed.message)
        return len(taken)

    async def verify(self, taken: Upload) -> None:
        """Read the bytes of an upload this verifier holds, then settle its record."""
        life = self.life
        try:
            # The lock is not held while reading (a DELETE must not wait for it): a complete
            # upload's bytes change only by being removed, which the record then says.
            sha256: str | None = await life.digests.read_back(taken, self._held(taken))
        except StoredBytesMissing:
            sha256 = None
        async with life.lock(taken.id):
            upload = await life.store.get(taken.id)
            if upload is None or not upload.complete or not upload.digest_pending:
                return  # deleted, expired or verified meanwhile
            if sha256 is None:
                log.error("upload %s has no stored bytes to verify; retried later", upload.id)
                return
            upload.verify_at = None
            try:
                await self.completion.verified(upload, sha256)
            except DigestMismatch as mismatch:  # failed, discarded, told (a Rejected event)
                log.warning("upload %s: %s", upload.id, mismatch.message)
                return
            await life.store.save(upload)
            upload.offset = upload.length or 0
            log.info("upload %s verified in the background: sha-256 %s", upload.id, sha256)
            # Complete (and served) since its completion; told now, with its checked digest.
            await life.events.publish(events.Finished(events.snapshot(upload)))

    async def _held(self, upload: Upload) -> AsyncIterator[bytes]:
        """The upload's bytes, renewing the lease as they pass."""
        renew_at = time.monotonic() + self.lease / 3
        async for block in self.life.storage.read(upload.stored_as, 0, upload.length or 0):
            yield block
            if time.monotonic() >= renew_at:
                await self.life.store.verify_hold(upload.id, time.time() + self.lease)
                renew_at = time.monotonic() + self.lease / 3
