"""Appending a request's body at an upload's offset: the offset checked against the storage,
the body pumped in bounded blocks while its checksum and the upload's running SHA-256 are
computed, committed (or, for a checksum that fails, discarded), then completion when the last
byte is in."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from haul.core import events
from haul.core.completion import Completion
from haul.core.lifecycle import Lifecycle
from haul.core.models import ConcatKind, Upload
from haul.core.policy import SNIFF_BYTES
from haul.core.pump import BodyInterrupted, pump
from haul.core.quotas import Quotas
from haul.errors import (
    ChecksumMismatch,
    DigestConflict,
    DigestMismatch,
    ExceedsLength,
    HaulError,
    InvalidHeader,
    LengthAlreadySet,
    ModifyFinal,
    OffsetMismatch,
    TooLarge,
    UnsupportedChecksumAlgorithm,
)
from haul.wire.checksums import new_hasher


class Writing:
    def __init__(self, life: Lifecycle, quotas: Quotas, completion: Completion) -> None:
        self.life = life
        self.quotas = quotas
        self.completion = completion

    async def append(
        self,
        upload_id: str,
        offset: int,
        body: AsyncIterator[bytes],
        *,
        content_length: int | None = None,
        checksum: tuple[str, bytes] | None = None,
        new_length: int | None = None,
        declared_sha256: str | None = None,
        owner: str = "",
    ) -> Upload:
        life = self.life
        hasher = None
        if checksum is not None:
            hasher = new_hasher(checksum[0])
            if hasher is None:
                raise UnsupportedChecksumAlgorithm(
                    f"checksum algorithm {checksum[0]!r} is not supported"
                )
        # A newer request takes over from one still writing (often one whose client left
        # unnoticed while the store hung): it would hold the lock until the store answered.
        life.writers.ask_to_stop(upload_id, owner)
        async with life.lock(upload_id), life.writers.writing(upload_id, owner) as body_phase:
            upload = await life.live(upload_id, owner)
            if upload.is_final:
                return await self._declare_final(
                    upload, offset, body, content_length, checksum, new_length, declared_sha256
                )
            # Read once per request: the storage may keep what it read for the writer.
            current = await life.storage.offset(upload.stored_as)
            if new_length is not None:
                await self._declare_length(upload, new_length, current)
            if declared_sha256 is not None and declared_sha256 != upload.expected_sha256:
                if upload.expected_sha256 is not None:
                    raise DigestConflict("the upload already declares a different SHA-256")
                upload.expected_sha256 = declared_sha256
                await life.store.save(upload)
            if upload.complete or (upload.length is not None and current == upload.length):
                current = upload.length or 0
            if offset != current:
                raise OffsetMismatch(f"the upload's offset is {current}, the request says {offset}")
            limit = self._remaining(upload, current)
            if content_length is not None and limit is not None and content_length > limit:
                raise self._overflow(upload, limit)
            whole = life.digests.take_running(upload, current)
            if whole is not None and current == 0 and checksum and checksum[0] == "sha256":
                # From offset 0 the request's SHA-256 is the upload's running one: hash once.
                hasher = whole
            hashers = list({id(h): h for h in (hasher, whole) if h is not None}.values())
            atomic = hasher is not None
            writer = await life.storage.open_writer(upload.stored_as, current, atomic=atomic)
            try:
                body_phase.waiting_on_storage(False)
                try:
                    received = await pump(
                        body, writer, hashers, limit, body_phase.waiting_on_storage
                    )
                finally:
                    body_phase.end()  # what follows (commit, completion) runs to its end
            except BodyInterrupted:
                # An interrupted request keeps what arrived, unless a checksum has to vouch for it.
                with contextlib.suppress(Exception):
                    if hasher is None:
                        upload.offset = await writer.commit()
                        await self._after_write(upload, current, upload.offset - current)
                    else:
                        await writer.discard()
                raise
            except BaseException:
                await asyncio.shield(writer.discard())
                raise
            if hasher is not None and checksum is not None and hasher.digest() != checksum[1]:
                await writer.discard()
                raise ChecksumMismatch("the body does not match its Upload-Checksum")
            upload.offset = await writer.commit()
            if whole is not None and upload.offset == current + received:
                life.digests.keep_running(upload.id, upload.offset, whole)
            return await self._after_write(upload, current, upload.offset - current)

    async def _declare_final(
        self,
        upload: Upload,
        offset: int,
        body: AsyncIterator[bytes],
        content_length: int | None,
        checksum: tuple[str, bytes] | None,
        new_length: int | None,
        sha256: str | None,
    ) -> Upload:
        """A final upload takes no bytes, but its client may declare its digest once it knows
        it (the final was created before its hash was ready); the caller holds its lock."""
        refused = ModifyFinal("a final upload is assembled from its partials, not patched")
        if sha256 is None or new_length is not None or (content_length or 0) > 0:
            raise refused
        async for block in body:  # a body without Content-Length must turn out empty
            if block:
                raise refused
        if checksum is not None:
            hasher = new_hasher(checksum[0])
            if hasher is None or hasher.digest() != checksum[1]:
                raise ChecksumMismatch("the body does not match its Upload-Checksum")
        current = (upload.length or 0) if upload.complete else 0
        if offset != current:
            raise OffsetMismatch(f"the upload's offset is {current}, the request says {offset}")
        if upload.expected_sha256 not in (None, sha256):
            raise DigestConflict("the upload already declares a different SHA-256")
        if upload.complete and upload.sha256 not in (None, sha256):
            # Assembled and hashed before the declaration came: it fails verification late.
            await self.completion.fail(upload, "digest", "failed verification")
            raise DigestMismatch(
                f"the stored bytes hash to sha-256 {upload.sha256}, but the client declared "
                f"{sha256}; the upload was discarded"
            )
        if upload.expected_sha256 is None:
            upload.expected_sha256 = sha256
            await self.life.store.save(upload)
        upload.offset = current
        return upload

    async def _declare_length(self, upload: Upload, length: int, current: int) -> None:
        if upload.length is not None:
            if upload.length != length:
                raise LengthAlreadySet(f"the upload's length is already {upload.length}")
            return
        self.quotas.check_size(length)
        if length < current:
            raise InvalidHeader(f"Upload-Length {length} is less than the {current} bytes stored")
        upload.length = length
        await self.life.store.save(upload)

    def _remaining(self, upload: Upload, current: int) -> int | None:
        if upload.length is not None:
            return upload.length - current
        if self.life.limits.max_size:
            return self.life.limits.max_size - current
        return None

    def _overflow(self, upload: Upload, limit: int) -> HaulError:
        if upload.length is None:
            return TooLarge(f"the upload would exceed the maximum size {self.life.limits.max_size}")
        return ExceedsLength(f"the request carries more than the {limit} bytes still owed")

    async def _after_write(self, upload: Upload, previous: int, received: int) -> Upload:
        if (
            previous < SNIFF_BYTES <= upload.offset
            and upload.concat is not ConcatKind.PARTIAL
            and self.life.storage.reads_while_writing
        ):
            await self.completion.check_content(upload)  # as soon as the first bytes tell
        now = time.time()
        upload.updated_at = now
        if upload.length is not None and upload.offset == upload.length:
            await self._progressed(upload, received)
            return await self.completion.complete(upload)
        upload.expires_at = self.life.expiry(now)
        await self.life.store.save(upload)
        await self._progressed(upload, received)
        return upload

    async def _progressed(self, upload: Upload, received: int) -> None:
        if received:  # a request that only declared a length moved nothing
            progress = events.Progress(events.snapshot(upload), received=received)
            await self.life.events.publish(progress)
