"""The upload service: the one facade every HTTP surface and command uses. Each job lives in a
module of its own (creation, writing, completion, dedup, concatenation, garbage collection);
this class wires them together over the backends and answers for them."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from haul.core import events
from haul.core.completion import Completion
from haul.core.concat import Concatenation
from haul.core.creation import Creation
from haul.core.dedup import Dedup
from haul.core.events import Events
from haul.core.gate import Gate
from haul.core.gc import Collector, GcReport
from haul.core.interfaces import Locker, MetadataStore, Storage, StoredBytesMissing
from haul.core.lifecycle import Lifecycle, Limits, is_upload_id
from haul.core.models import Upload, UploadState
from haul.core.policy import TypePolicy
from haul.core.quotas import Quotas
from haul.core.scan import Scanner
from haul.core.verifier import Verifier
from haul.core.writing import Writing
from haul.errors import Gone, UploadIncomplete

__all__ = ["GcReport", "Limits", "UploadService", "is_upload_id"]

log = logging.getLogger("haul")


class UploadService:
    def __init__(
        self,
        storage: Storage,
        store: MetadataStore,
        locker: Locker,
        limits: Limits,
        *,
        policy: TypePolicy | None = None,
        scanner: Scanner | None = None,
        events: Events | None = None,
        gate: Gate | None = None,
    ) -> None:
        self.storage = storage
        self.store = store
        self.locker = locker
        self.limits = limits
        self.events = events or Events()
        policy = policy or TypePolicy()
        self.policy = policy  # for surfaces that judge a file's first chunk as it arrives
        self._life = Lifecycle(storage, store, locker, limits, self.events, gate)
        quotas = Quotas(store, limits)
        self._completion = Completion(self._life, quotas, policy, scanner)
        self._dedup = Dedup(self._life, self._completion)
        self._creation = Creation(self._life, quotas, policy, self._dedup, self._reconcile)
        self._concat = Concatenation(self._life, quotas, policy, self._completion)
        self._completion.partial_completed = self._concat.partial_completed
        self._writing = Writing(self._life, quotas, self._completion)
        self._collector = Collector(self._life)
        self._verifier = Verifier(self._life, self._completion)
        self._completion.digest_deferred = self._verifier.nudge
        # The steps of an upload's life, each answered by the module whose job it is.
        self.create = self._creation.create
        self.create_final = self._concat.create_final
        self.append = self._writing.append
        self.prove = self._dedup.prove
        self.complete_direct = self._completion.complete_direct
        # Pending SHA-256s read back in the background: run() by each server, or one pass.
        self.verify_forever = self._verifier.run
        self.verify_pending = self._verifier.verify_pending

    async def open(self) -> None:
        await self.store.open()
        await self.storage.open()

    async def close(self) -> None:
        """Release every backend's connections (on shutdown), even when one of them fails."""
        await self._concat.drain()
        try:
            await self.store.close()
        finally:
            try:
                await self.locker.close()
            finally:
                await self.storage.close()

    async def terminate(self, upload_id: str, *, owner: str = "") -> None:
        await self._life.gate.allow("pre-terminate", await self._life.live(upload_id, owner))
        retired = await self._life.retire(upload_id, UploadState.TERMINATED)
        log.info("upload %s terminated", upload_id)
        if retired is not None:
            await self._life.tell(events.Terminated, retired)
            await self._concat.final_terminated(retired)

    async def collect_garbage(self, *, now: float | None = None, batch: int = 500) -> GcReport:
        return await self._collector.collect(now=now, batch=batch)

    # -- reading state ------------------------------------------------------------------------

    async def status(self, upload_id: str, *, owner: str = "") -> Upload:
        """The upload as it is now; changes nothing (see :meth:`reconcile`)."""
        return await self._life.status(upload_id, owner)

    async def record(self, upload_id: str, *, owner: str = "") -> Upload:
        """The caller's live upload as its record says, without asking the storage for its
        offset (for checks that need only whose it is and whether it is complete)."""
        return await self._life.live(upload_id, owner)

    async def reconcile(self, upload_id: str, *, owner: str = "") -> Upload:
        """The upload as it should be: completes one whose bytes all landed while the process
        died before its record said so, and assembles a final upload whose partials are all
        complete. Safe to repeat; HEAD and GET ask for it."""
        return await self._reconcile(upload_id, owner)

    async def _reconcile(self, upload_id: str, owner: str) -> Upload:
        upload = await self._life.live(upload_id, owner)
        if upload.state is not UploadState.ACTIVE:
            upload.offset = upload.length or 0  # complete: live() let no gone one through
            return upload
        if upload.is_final:
            return await self._concat.assemble(upload.id)
        return await self._completion.settle(upload)

    async def owner_of(self, upload_id: str) -> str | None:
        """The owner of a live upload, for checks that carry their own proof (signed links)."""
        upload = await self.store.get(upload_id) if is_upload_id(upload_id) else None
        return None if upload is None or upload.state.gone else upload.owner

    async def open_download(
        self, upload_id: str, start: int | None = None, end: int | None = None, *, owner: str = ""
    ) -> tuple[Upload, AsyncIterator[bytes]]:
        upload = await self.reconcile(upload_id, owner=owner)
        if not upload.complete:
            raise UploadIncomplete(
                f"upload {upload_id} has {upload.offset} of {upload.length} bytes; "
                "it can be downloaded once complete"
            )
        size = upload.length or 0
        first = start or 0
        stop = size if end is None else end
        stream = self.storage.read(upload.stored_as, first, stop)
        if first >= stop:
            return upload, stream
        try:  # a missing object shows now, as an answer, not as a response broken midway
            head = await anext(stream)
        except StoredBytesMissing:
            raise Gone(f"the bytes of upload {upload_id} are not stored on their own") from None
        except StopAsyncIteration:
            head = b""
        return upload, _after(head, stream)


async def _after(head: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``head``, then the rest of the stream it was taken from."""
    if head:
        yield head
    async for block in rest:
        yield block
