"""Instant upload: content the server already holds completes a new upload at once, with no
byte sent. Knowing a digest must not grant content, so only the same owner's uploads are
reused directly (anonymous clients count as one owner only when configured); another owner's
content needs a proof of possession first: the client answers a challenge over random ranges
of the file, which only someone holding the bytes can."""

from __future__ import annotations

import logging

from haul.core.completion import Completion
from haul.core.interfaces import StoredBytesMissing
from haul.core.lifecycle import Lifecycle
from haul.core.models import Upload
from haul.errors import ProofRejected
from haul.wire.possession import Challenge, answer, matches

log = logging.getLogger("haul")


class Dedup:
    def __init__(self, life: Lifecycle, completion: Completion) -> None:
        self.life = life
        self.completion = completion

    async def try_instant(self, upload: Upload, sha256: str, length: int) -> Upload:
        """Share the owner's identical content and finish, or ask for a proof when another
        owner holds it; otherwise the upload stays as it is and the client sends the bytes."""
        life = self.life
        if not life.limits.instant_upload:
            return upload
        if upload.owner or life.limits.anonymous_dedup:
            source = await life.store.find_complete(sha256, length, upload.owner)
            if source is not None:
                return await self._adopt(upload, source, sha256)
        if life.limits.proof_dedup:
            other = await life.store.find_complete(sha256, length, None)
            if other is not None:
                upload.challenge = Challenge.new(length, other.id).to_json()
                await life.store.save(upload)
        return upload

    async def prove(self, upload_id: str, proof: bytes, *, owner: str = "") -> Upload:
        """Answer to the upload's challenge: the right answer completes it at once."""
        life = self.life
        async with life.lock(upload_id):
            upload = await life.live(upload_id, owner)
            if upload.challenge is None:
                raise ProofRejected("no proof of possession was asked for this upload")
            challenge = Challenge.from_json(upload.challenge)
            upload.challenge = None  # one answer per challenge: no guessing
            await life.store.save(upload)
        gone = "that content is no longer stored; send the bytes instead"
        source = await life.store.get(challenge.source)
        if source is None or not source.complete or source.sha256 != upload.expected_sha256:
            raise ProofRejected(gone)
        if upload.length != source.length or upload.expected_sha256 is None:
            raise ProofRejected("the declared length differs from the stored content")
        blocks = []
        try:
            for first, last in challenge.ranges:
                async for block in life.storage.read(source.stored_as, first, last + 1):
                    blocks.append(block)
        except StoredBytesMissing:  # deleted since: nothing to share any more
            raise ProofRejected(gone) from None
        if not matches(answer(challenge.nonce, blocks), proof):
            raise ProofRejected("the proof does not match the content; send the bytes instead")
        return await self._adopt(upload, source, upload.expected_sha256)

    async def _adopt(self, upload: Upload, source: Upload, sha256: str) -> Upload:
        """Give ``upload`` the stored bytes of ``source`` and complete it, without a byte sent."""
        life = self.life
        # Holding the source's lock keeps it from being deleted while its bytes are linked.
        async with life.lock(source.id):
            shared = await life.storage.share(source.stored_as, upload.stored_as)
        if not shared:
            return upload
        async with life.lock(upload.id):
            current = await life.live(upload.id, upload.owner)  # a PATCH may have finished it
            current.offset = current.length or 0
            # The bytes are the very ones already verified as ``sha256``: no second read.
            completed = await self.completion.complete(current, known_sha256=sha256)
        log.info("instant upload %s: same content as %s", upload.id, source.id)
        return completed
