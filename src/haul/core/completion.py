"""Completing an upload: the content policy on its first bytes, its SHA-256 against what the
client declared, the scanner, identical content stored once; then the record says complete.
A refused upload is discarded and never served."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from haul.core import events
from haul.core.interfaces import DirectUploads
from haul.core.lifecycle import Lifecycle
from haul.core.models import ConcatKind, Upload, UploadState
from haul.core.policy import NAME_KEYS, SNIFF_BYTES, TYPE_KEYS, TypePolicy
from haul.core.quotas import Quotas
from haul.core.scan import Scanner
from haul.errors import (
    DigestConflict,
    DigestMismatch,
    NotFound,
    ScanRejected,
    TooLarge,
    TypeNotAllowed,
)

log = logging.getLogger("haul")


async def _nothing(upload: Upload) -> None:
    return None


class Completion:
    def __init__(
        self,
        life: Lifecycle,
        quotas: Quotas,
        policy: TypePolicy,
        scanner: Scanner | None,
    ) -> None:
        self.life = life
        self.quotas = quotas
        self.policy = policy
        self.scanner = scanner
        # Told when a partial upload completes (concatenation waits for it).
        self.partial_completed: Callable[[Upload], Awaitable[None]] = _nothing
        # Told when an upload completed with its SHA-256 left to the verifier.
        self.digest_deferred: Callable[[], None] = lambda: None

    async def complete(
        self, upload: Upload, known_sha256: str | None = None, parts: Sequence[Upload] = ()
    ) -> Upload:
        """Mark complete (idempotent); the caller holds the upload's lock. A final upload comes
        with its ``parts``; ``known_sha256`` is for bytes already verified as that digest."""
        if upload.state is not UploadState.ACTIVE:
            return upload
        life = self.life
        if not upload.is_final:  # a final upload was made whole by its concatenation
            await life.storage.finish(upload.stored_as)
        whole_file = upload.concat is not ConcatKind.PARTIAL
        if whole_file:
            await self.check_content(upload)
        deferred = False
        if known_sha256 is not None:
            upload.sha256 = known_sha256
        elif life.digests.wanted(upload):
            sha256 = await life.digests.cheap(upload, parts)
            if sha256 is None and life.limits.verify_later and whole_file:
                # Only a read-back can tell, and the store is remote: the client does not
                # wait for it. Until verified the upload has no digest, so it is never shared.
                upload.verify_at = time.time()
                deferred = True
            else:
                if sha256 is None:
                    sha256 = await life.digests.read_back(upload)
                await self.verified(upload, sha256)
        if whole_file and self.scanner is not None:
            await self._scan(upload)
        await life.gate.allow("pre-finish", events.snapshot(upload))  # may refuse: stays active
        upload.state = UploadState.COMPLETE
        upload.offset = upload.length or 0
        upload.updated_at = time.time()
        # A partial is only worth keeping until a final upload takes it: one that never comes
        # (an abandoned parallel upload) must not hold its bytes forever.
        partial = upload.concat is ConcatKind.PARTIAL
        upload.expires_at = life.expiry(upload.updated_at) if partial else None
        await life.store.save(upload)
        log.info(
            "upload %s complete (%s bytes)%s", upload.id, upload.length,
            ", its sha-256 to be verified" if deferred else "",
        )  # fmt: skip
        if deferred:
            self.digest_deferred()
        if partial and life.limits.verify_digest:
            life.digests.ordered.completed(upload)
        finished = events.Finished(events.snapshot(upload), instant=known_sha256 is not None)
        try:
            if not deferred:  # else told once verified: post-finish carries a checked digest
                await life.events.publish(finished)
        finally:  # a final waiting for this partial is assembled whatever a listener did
            if partial:
                await self.partial_completed(upload)
        return upload

    async def verified(self, upload: Upload, sha256: str) -> None:
        """The stored bytes hash to ``sha256``: check it against the declaration (a mismatch
        fails the upload and raises DigestMismatch), then store identical content once. The
        caller holds the upload's lock and saves the record."""
        upload.sha256 = sha256
        if upload.expected_sha256 and sha256 != upload.expected_sha256:
            await self.fail(upload, "digest", "failed verification")
            raise DigestMismatch(
                f"the stored bytes hash to sha-256 {sha256}, but the client declared "
                f"{upload.expected_sha256}; the upload was discarded"
            )
        if self.life.limits.instant_upload:
            await self._store_once(upload, sha256)

    async def settle(self, upload: Upload) -> Upload:
        """Complete an upload whose bytes all landed while its record did not say so (the
        process died in between). Not for final uploads: their concatenation settles them."""
        upload.offset = await self.life.storage.offset(upload.stored_as)
        if upload.length is not None and upload.offset == upload.length:
            async with self.life.lock(upload.id):
                return await self.complete(await self.life.live(upload.id, upload.owner))
        return upload

    async def complete_direct(
        self,
        upload_id: str,
        parts: Sequence[tuple[int, str]],
        *,
        owner: str = "",
        declared_sha256: str | None = None,
    ) -> Upload:
        """Finish an upload whose parts the client sent straight to the store: the store's
        own record of the parts decides its length, then the usual checks run (size, content
        policy, digest, scan) before it is complete. Its SHA-256 needs a read-back, so with
        ``verify_later`` it is verified in the background, against ``declared_sha256`` if
        the client declared one."""
        storage = self.life.storage
        if not isinstance(storage, DirectUploads):
            raise NotFound("this server's storage takes no direct uploads")
        async with self.life.lock(upload_id):
            upload = await self.life.live(upload_id, owner)
            if upload.complete:
                return upload
            if declared_sha256 is not None and declared_sha256 != upload.expected_sha256:
                if upload.expected_sha256 is not None:
                    raise DigestConflict("the upload already declares a different SHA-256")
                upload.expected_sha256 = declared_sha256
            length = await storage.complete_parts(upload.stored_as, parts)
            try:
                self.quotas.check_size(length)
            except TooLarge:
                await self.fail(upload, "size", "was larger than the maximum size")
                raise
            upload.length = upload.offset = length
            await self.life.store.save(upload)
            return await self.complete(upload)

    async def fail(self, upload: Upload, reason: str, why: str) -> None:
        """Discard a refused upload (``reason``: one of events.REJECTIONS); the caller holds
        its lock."""
        await self.life.tombstone(upload, UploadState.FAILED)
        log.warning("upload %s %s and was discarded", upload.id, why)
        rejected = events.Rejected(events.snapshot(upload), reason=reason, detail=why)
        await self.life.events.publish(rejected)

    async def check_content(self, upload: Upload) -> None:
        """The first bytes must be a kind the policy allows, and the kind the name says."""
        if not self.policy.active:
            return
        stop = min(SNIFF_BYTES, upload.length if upload.length is not None else upload.offset)
        reading = self.life.storage.read(upload.stored_as, 0, stop)
        head = b"".join([block async for block in reading])
        try:
            self.policy.check_content(
                head, upload.text_metadata(*NAME_KEYS), upload.text_metadata(*TYPE_KEYS)
            )
        except TypeNotAllowed as refused:
            await self.fail(
                upload, "type", f"was refused by the content policy ({refused.message})"
            )
            raise

    async def _scan(self, upload: Upload) -> None:
        assert self.scanner is not None
        verdict = await self.scanner.scan(
            upload, self.life.storage.read(upload.stored_as, 0, upload.length or 0)
        )
        if verdict is not None:
            await self.fail(upload, "scan", f"was refused by the scanner ({verdict})")
            raise ScanRejected(f"the file was refused by the scanner: {verdict}")

    async def _store_once(self, upload: Upload, sha256: str) -> None:
        """Identical content is stored once: when another upload already holds these bytes,
        this one's copy is replaced by a share of them. Invisible to clients, so any owner's
        upload may serve."""
        twin = await self.life.store.find_complete(sha256, upload.length or 0, None)
        if twin is None or twin.id == upload.id:
            return
        async with self.life.lock(twin.id):
            if await self.life.storage.share(twin.stored_as, upload.stored_as):
                log.info("upload %s stored once with %s", upload.id, twin.id)
