"""Creating an upload: limits and quotas first, the content policy on its declared name and
type, then the record and room in the storage. A creation carrying an Idempotency-Key names
its upload by that key, so a retry (on any node) finds the upload the first request made."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable

from haul.core import events
from haul.core.dedup import Dedup
from haul.core.gate import decide
from haul.core.lifecycle import EMPTY_SHA256, Lifecycle, keyed_upload_id, new_upload_id
from haul.core.models import ConcatKind, Quota, Upload, UploadState
from haul.core.policy import NAME_KEYS, TYPE_KEYS, TypePolicy
from haul.core.quotas import NO_QUOTA, Quotas
from haul.errors import DigestMismatch, Gone, IdempotencyKeyReused, UploadExists

log = logging.getLogger("haul")


def request_digest(
    length: int | None, metadata_raw: str | None, partial: bool, expected_sha256: str | None
) -> str:
    """What a creation asked for, as it asked (before any hook changed the upload)."""
    asked = json.dumps([length, metadata_raw, partial, expected_sha256])
    return hashlib.sha256(asked.encode()).hexdigest()


class Creation:
    def __init__(
        self,
        life: Lifecycle,
        quotas: Quotas,
        policy: TypePolicy,
        dedup: Dedup,
        reconcile: Callable[[str, str], Awaitable[Upload]],
    ) -> None:
        self.life = life
        self.quotas = quotas
        self.policy = policy
        self.dedup = dedup
        self.reconcile = reconcile

    async def create(
        self,
        *,
        length: int | None,
        metadata_raw: str | None = None,
        partial: bool = False,
        owner: str = "",
        expected_sha256: str | None = None,
        quota: Quota = NO_QUOTA,
        idempotency_key: str | None = None,
    ) -> Upload:
        life = self.life
        upload_id = new_upload_id()
        asked = request_digest(length, metadata_raw, partial, expected_sha256)
        if idempotency_key is not None:
            upload_id = keyed_upload_id(owner, idempotency_key)
            earlier = await life.store.get(upload_id)
            if earlier is not None:
                return await self._repeated(earlier, asked)
        if length is not None:
            self.quotas.check_size(length, quota)
        await self.quotas.check_capacity()
        await self.quotas.check_owner(owner, quota, length or 0, counts_as_file=not partial)
        now = time.time()
        upload = Upload(
            id=upload_id,
            length=length,
            state=UploadState.ACTIVE,
            created_at=now,
            updated_at=now,
            expires_at=life.expiry(now),
            metadata_raw=metadata_raw,
            concat=ConcatKind.PARTIAL if partial else None,
            owner=owner,
            expected_sha256=expected_sha256,
            request_digest=asked if idempotency_key is not None else None,
        )
        decide(upload, await life.gate.allow("pre-create", events.snapshot(upload)))
        if not partial:  # a partial is judged as part of its final upload
            self.policy.check(upload.text_metadata(*NAME_KEYS), upload.text_metadata(*TYPE_KEYS))
        if length == 0:
            if expected_sha256 not in (None, EMPTY_SHA256):
                raise DigestMismatch("an empty upload's SHA-256 is " + EMPTY_SHA256)
            await life.gate.allow("pre-finish", events.snapshot(upload))  # complete at once
            upload.state = UploadState.COMPLETE
            upload.expires_at = None
            upload.sha256 = EMPTY_SHA256
        try:
            await life.store.insert(upload)
        except UploadExists:  # the same keyed request, sent twice at once: the other won
            return await self._repeated(await life.live(upload.id, owner), asked)
        if idempotency_key is None:
            await life.storage.create(upload.stored_as, upload.length)
        else:  # a retry on another node may be making room for it at this very moment
            async with life.lock(upload.id):
                await life.storage.create(upload.stored_as, upload.length)
        log.info("created upload %s length=%s", upload.id, length)
        await life.tell(events.Created, upload)
        if upload.complete:
            await life.tell(events.Finished, upload)
        if expected_sha256 and length and upload.state is UploadState.ACTIVE:
            return await self.dedup.try_instant(upload, expected_sha256, length)
        return upload

    async def _repeated(self, earlier: Upload, asked: str) -> Upload:
        """A creation sent again with its Idempotency-Key (its answer was lost): the upload
        the first one made, as it is now, when the request is the same."""
        # (A record made before requests were fingerprinted is taken as the same request.)
        if earlier.request_digest not in (None, asked):
            raise IdempotencyKeyReused(
                "this Idempotency-Key was first sent with a different upload; use a new key"
            )
        if earlier.state.gone:
            raise Gone(f"the upload made with this Idempotency-Key is {earlier.state.value}")
        if earlier.state is UploadState.ACTIVE:
            # The first request may have died between its record and its storage.
            async with self.life.lock(earlier.id):
                await self.life.storage.create(earlier.stored_as, earlier.length)
        log.info("upload %s: its creation was repeated", earlier.id)
        return await self.reconcile(earlier.id, earlier.owner)
