"""Concatenation: a final upload made of completed partial uploads, in order, assembled by the
storage without copying bytes where it can. A final may be created before its partials are
complete; it is assembled as soon as the last one is, in the background or on the next look."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from haul.core import events
from haul.core.completion import Completion
from haul.core.gate import decide
from haul.core.interfaces import InPlaceConcat, StoredBytesMissing
from haul.core.lifecycle import Lifecycle, each, new_upload_id
from haul.core.models import ConcatKind, Quota, Upload, UploadState
from haul.core.policy import NAME_KEYS, TYPE_KEYS, TypePolicy
from haul.core.quotas import NO_QUOTA, Quotas
from haul.errors import (
    DigestConflict,
    Gone,
    HaulError,
    InvalidConcat,
    Locked,
    NotFound,
    ScanRejected,
    TypeNotAllowed,
)

log = logging.getLogger("haul")
PLACE_LOCK_WAIT = 1.0  # seconds a final's creation waits for one partial's lock to place it
DRAIN_WAIT = 30.0  # seconds a shutdown waits for the assemblies under way


class Concatenation:
    def __init__(
        self, life: Lifecycle, quotas: Quotas, policy: TypePolicy, completion: Completion
    ) -> None:
        self.life = life
        self.quotas = quotas
        self.policy = policy
        self.completion = completion
        # asyncio keeps only weak references to tasks: hold background work until it is done.
        self._background: set[asyncio.Task[None]] = set()

    async def create_final(
        self,
        part_ids: Sequence[str],
        *,
        metadata_raw: str | None = None,
        owner: str = "",
        expected_sha256: str | None = None,
        quota: Quota = NO_QUOTA,
    ) -> Upload:
        life = self.life
        repeated = await self._same_final(part_ids, owner, expected_sha256)
        if repeated is not None:
            # The same request again (its answer was lost, or it timed out while the first one
            # was verifying): the same upload, once its assembly is over.
            return await self.assemble(repeated.id)
        parts: list[Upload] = []
        records = await life.store.get_many(part_ids)
        for part_id in part_ids:
            part = records.get(part_id)
            if part is None or part.owner != owner:
                raise InvalidConcat(f"partial upload {part_id} does not exist")
            if part.concat is not ConcatKind.PARTIAL:
                raise InvalidConcat(f"upload {part_id} was not created as a partial upload")
            if part.state.gone:
                raise InvalidConcat(f"partial upload {part_id} is {part.state.value}")
            parts.append(part)
        known = [p.length for p in parts if p.length is not None]
        if len(known) == len(parts):
            self.quotas.check_size(sum(known), quota)
        await self.quotas.check_capacity()
        await self.quotas.check_owner(owner, quota, 0, counts_as_file=True)  # parts hold bytes
        now = time.time()
        final = Upload(
            id=new_upload_id(),
            length=None,
            state=UploadState.ACTIVE,
            created_at=now,
            updated_at=now,
            expires_at=life.expiry(now),
            metadata_raw=metadata_raw,
            concat=ConcatKind.FINAL,
            parts=tuple(part_ids),
            owner=owner,
            expected_sha256=expected_sha256,
        )
        decide(final, await life.gate.allow("pre-create", events.snapshot(final)))
        self.policy.check(final.text_metadata(*NAME_KEYS), final.text_metadata(*TYPE_KEYS))
        await life.store.insert(final)
        await life.storage.create(final.stored_as)
        await self._place(final, parts)
        log.info("created final upload %s from %d partials", final.id, len(part_ids))
        await life.tell(events.Created, final)
        return await self.assemble(final.id)

    async def _place(self, final: Upload, parts: Sequence[Upload]) -> None:
        """Have the partials that hold no byte yet write straight into the final's place, when
        the storage can (the concatenation then copies nothing). Best effort: a partial not
        placed is copied when the final is assembled. Not for partials that must stay readable
        on their own: one that declared its own SHA-256 (hashed from storage when this process
        did not see every byte), or any partial when they are kept after concatenation."""
        storage = self.life.storage
        if not isinstance(storage, InPlaceConcat) or self.life.limits.keep_partials:
            return
        if any(part.length is None for part in parts):
            return
        layout = [0]
        for part in parts:
            layout.append(layout[-1] + (part.length or 0))
        candidates = [
            index
            for index, part in enumerate(parts)
            if part.length and not (part.complete or part.expected_sha256)
        ]

        async def place_one(index: int) -> None:
            part = parts[index]
            try:
                # Not the usual lock wait: a partial being written holds bytes, so it stays out.
                async with self.life.locker.lock(part.id, PLACE_LOCK_WAIT):
                    if await storage.offset(part.stored_as) == 0:
                        await storage.place(part.stored_as, final.stored_as, layout, index)
            except Locked:  # a request is writing to it: it holds bytes already
                pass

        # A few at a time: each placement is a handful of small store round trips.
        await each(candidates, place_one)

    async def _same_final(
        self, part_ids: Sequence[str], owner: str, expected_sha256: str | None
    ) -> Upload | None:
        """A live final upload of ``owner`` made of exactly these partials, in this order."""
        if not part_ids:
            return None
        for final in await self.life.store.finals_listing(part_ids[0]):
            same = final.owner == owner and final.parts == tuple(part_ids)
            if same and final.state in (UploadState.ACTIVE, UploadState.COMPLETE):
                if expected_sha256 and final.expected_sha256 not in (None, expected_sha256):
                    raise DigestConflict("the final upload already declares a different SHA-256")
                return final
        return None

    async def partial_completed(self, part: Upload) -> None:
        """Told by the completion of ``part``: assemble the finals that were waiting for it."""
        for final in await self.life.store.finals_waiting_for(part.id):
            # The final's own lock is taken inside; the partial's lock is held by our caller.
            task = asyncio.create_task(self._assemble_quietly(final.id))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Let the assemblies under way finish (on shutdown, before the backends close). One
        that takes too long (a hung store) is left: the final still waits, and the next
        request for it assembles it."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=DRAIN_WAIT)

    async def _assemble_quietly(self, final_id: str) -> None:
        try:
            await self.assemble(final_id)
        except HaulError as exc:
            log.info("final upload %s not assembled yet: %s", final_id, exc.message)

    async def assemble(self, final_id: str) -> Upload:
        """Assemble a final upload if every partial is complete; return its current state."""
        life = self.life
        async with life.lock(final_id):
            final = await life.store.get(final_id)
            if final is None:
                raise NotFound(f"upload {final_id} does not exist")
            if final.state is not UploadState.ACTIVE:
                final.offset = final.length or 0
                return final
            parts: list[Upload] = []
            records = await life.store.get_many(final.parts)
            for part_id in final.parts:
                part = records.get(part_id)
                if part is None or part.state.gone:
                    raise Gone(f"partial upload {part_id} of final upload {final_id} is gone")
                if part.state is UploadState.ACTIVE:
                    part = await self.completion.settle(part)
                if not part.complete:
                    return final  # concatenation-unfinished: wait for the rest
                parts.append(part)
            final.length = sum(p.length or 0 for p in parts)
            self.quotas.check_size(final.length)
            try:
                named = [part.stored_as for part in parts]
                await life.storage.concatenate(final.stored_as, named)
            except StoredBytesMissing:
                raise Gone(f"a partial upload of final upload {final_id} lost its bytes") from None
            refused: HaulError | None = None
            try:
                final = await self.completion.complete(final, parts=parts)
            except (TypeNotAllowed, ScanRejected) as error:
                refused = error
        ids = [part.id for part in parts]
        if refused is not None:  # nothing of a refused upload is kept: not its parts either
            await each(ids, lambda part_id: self._retire(part_id, UploadState.FAILED))
            raise refused
        if life.limits.keep_partials:
            await each(ids, self._keep)
        else:
            await each(ids, lambda part_id: self._retire(part_id, UploadState.CONSUMED))
        return final

    async def final_terminated(self, final: Upload) -> None:
        """A final upload deleted before its assembly takes its partials with it where they
        may have been written in place: their bytes were the final's (on S3, parts of its
        multipart upload, which the deletion aborted), and a partial kept would report bytes no
        longer stored. Its client sees them gone (404) and sends them again."""
        storage = self.life.storage
        if not final.parts or self.life.limits.keep_partials:
            return
        if isinstance(storage, InPlaceConcat):
            await each(final.parts, lambda part_id: self._retire(part_id, UploadState.TERMINATED))

    async def _retire(self, part_id: str, state: UploadState) -> None:
        await self.life.retire(part_id, state)

    async def _keep(self, part_id: str) -> None:
        """A partial kept after its concatenation (--keep-partials) no longer expires."""
        async with self.life.lock(part_id):
            part = await self.life.store.get(part_id)
            if part is not None and part.complete and part.expires_at is not None:
                part.expires_at = None
                await self.life.store.save(part)
