"""The upload service: every rule about an upload's life lives here, once."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from haul.core.interfaces import DirectUploads, Locker, MetadataStore, Storage
from haul.core.models import ConcatKind, Quota, Upload, UploadState
from haul.core.ordered_digest import OrderedDigests
from haul.core.policy import NAME_KEYS, SNIFF_BYTES, TYPE_KEYS, TypePolicy
from haul.core.pump import BodyInterrupted, digest_stream, pump
from haul.core.scan import Scanner
from haul.errors import (
    ChecksumMismatch,
    DigestConflict,
    DigestMismatch,
    ExceedsLength,
    Gone,
    HaulError,
    IdempotencyKeyReused,
    InvalidConcat,
    InvalidHeader,
    LengthAlreadySet,
    ModifyFinal,
    NotFound,
    OffsetMismatch,
    ProofRejected,
    QuotaExceeded,
    RateLimited,
    ScanRejected,
    TooLarge,
    TooManyUploads,
    TypeNotAllowed,
    UnsupportedChecksumAlgorithm,
    UploadExists,
    UploadIncomplete,
)
from haul.wire.checksums import Hasher, new_hasher
from haul.wire.possession import Challenge, answer, matches

log = logging.getLogger("haul")
NO_QUOTA = Quota()


@dataclass(frozen=True)
class Limits:
    max_size: int = 0  # bytes; 0 = no limit
    max_active_uploads: int = 0  # 0 = no limit
    expiration: float = (
        86400.0  # seconds an unfinished upload lives after its last write; 0 = forever
    )
    tombstone_ttl: float = 7 * 86400.0  # how long 410 is answered for a gone upload
    orphan_grace: float = 3600.0  # stored bytes without a record are removed after this long
    lock_timeout: float = 3.0
    keep_partials: bool = False  # keep partial uploads after they were concatenated
    verify_digest: bool = True  # compute the SHA-256 of every completed upload (not partials)
    instant_upload: bool = True  # a declared digest the owner already stored completes at once
    anonymous_dedup: bool = False  # let anonymous clients (owner "") share one dedup scope
    proof_dedup: bool = True  # other owners' content, after a proof of possession


@dataclass
class GcReport:
    expired: int = 0
    purged_tombstones: int = 0
    orphans: int = 0
    ids: list[str] = field(default_factory=list)


# Running SHA-256 states kept for uploads written sequentially in this process, so that
# completing one costs no second read. Bounded: an evicted upload is hashed from storage.
MAX_RUNNING_DIGESTS = 10_000
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def new_upload_id() -> str:
    """128 random bits: unguessable, and safe as a file or object name."""
    return secrets.token_hex(16)


def keyed_upload_id(owner: str, idempotency_key: str) -> str:
    """The id a creation with this Idempotency-Key gets: its retries name the same upload.
    As unguessable as the key (clients send random ones) and scoped to the owner."""
    return hashlib.sha256(f"{owner}\0{idempotency_key}".encode()).hexdigest()[:32]


def is_upload_id(text: str) -> bool:
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


async def _each(ids: Sequence[str], work: Callable[[str], Awaitable[None]]) -> None:
    """``work`` for every id, a few at a time, so that their waits (locks, records, disk)
    overlap: a final upload of 1,000 partials retires them in ~0.5 s instead of ~0.8 s."""
    at_once = asyncio.Semaphore(4)

    async def one(item: str) -> None:
        async with at_once:
            await work(item)

    await asyncio.gather(*(one(item) for item in ids))


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
    ) -> None:
        self.storage = storage
        self.store = store
        self.locker = locker
        self.limits = limits
        self.policy = policy or TypePolicy()
        self.scanner = scanner
        # asyncio keeps only weak references to tasks: hold background work until it is done.
        self._background: set[asyncio.Task[None]] = set()
        self._running: dict[str, tuple[int, Hasher]] = {}
        self._ordered = OrderedDigests(lambda part: storage.read(part.id, 0, part.length or 0))

    async def open(self) -> None:
        await self.store.open()

    async def close(self) -> None:
        """Release every backend's connections (on shutdown), even when one of them fails."""
        try:
            await self.store.close()
        finally:
            try:
                await self.locker.close()
            finally:
                await self.storage.close()

    # -- creation -------------------------------------------------------------------------

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
        upload_id = new_upload_id()
        if idempotency_key is not None:
            upload_id = keyed_upload_id(owner, idempotency_key)
            earlier = await self.store.get(upload_id)
            if earlier is not None:
                return await self._repeated(earlier, length, metadata_raw, partial, expected_sha256)
        if length is not None:
            self._check_size(length, quota)
        await self._check_capacity()
        await self._check_quota(owner, quota, length or 0, counts_as_file=not partial)
        now = time.time()
        upload = Upload(
            id=upload_id,
            length=length,
            state=UploadState.ACTIVE,
            created_at=now,
            updated_at=now,
            expires_at=self._expiry(now),
            metadata_raw=metadata_raw,
            concat=ConcatKind.PARTIAL if partial else None,
            owner=owner,
            expected_sha256=expected_sha256,
        )
        if not partial:  # a partial is judged as part of its final upload
            self.policy.check(upload.text_metadata(*NAME_KEYS), upload.text_metadata(*TYPE_KEYS))
        if length == 0:
            if expected_sha256 not in (None, EMPTY_SHA256):
                raise DigestMismatch("an empty upload's SHA-256 is " + EMPTY_SHA256)
            upload.state = UploadState.COMPLETE
            upload.expires_at = None
            upload.sha256 = EMPTY_SHA256
        try:
            await self.store.insert(upload)
        except UploadExists:  # the same keyed request, sent twice at once: the other won
            return await self._repeated(
                await self._live(upload.id, owner), length, metadata_raw, partial, expected_sha256
            )
        if idempotency_key is None:
            await self.storage.create(upload.id)
        else:  # a retry on another node may be making room for it at this very moment
            async with self._lock(upload.id):
                await self.storage.create(upload.id)
        log.info("created upload %s length=%s", upload.id, length)
        if expected_sha256 and length and upload.state is UploadState.ACTIVE:
            return await self._try_instant(upload, expected_sha256, length)
        return upload

    async def _repeated(
        self,
        earlier: Upload,
        length: int | None,
        metadata_raw: str | None,
        partial: bool,
        expected_sha256: str | None,
    ) -> Upload:
        """A creation sent again with its Idempotency-Key (its answer was lost): the upload
        the first one made, as it is now, when the request is the same."""
        same = (
            (length is None or earlier.length == length)  # a deferred length may be set since
            and earlier.metadata_raw == metadata_raw
            and (earlier.concat is ConcatKind.PARTIAL) == partial
            and earlier.expected_sha256 == expected_sha256
        )
        if not same:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was first sent with a different upload; use a new key"
            )
        if earlier.state.gone:
            raise Gone(f"the upload made with this Idempotency-Key is {earlier.state.value}")
        if earlier.state is UploadState.ACTIVE:
            # The first request may have died between its record and its storage.
            async with self._lock(earlier.id):
                await self.storage.create(earlier.id)
        log.info("upload %s: its creation was repeated", earlier.id)
        return await self.status(earlier.id, owner=earlier.owner)

    async def _try_instant(self, upload: Upload, sha256: str, length: int) -> Upload:
        """Instant upload: when the owner already stored these bytes, share them and finish.

        Knowing a digest must not grant content, so only the same owner's uploads are reused
        directly (anonymous clients count as one owner only when configured); another owner's
        content needs a proof of possession first (see :meth:`prove`)."""
        if not self.limits.instant_upload:
            return upload
        if upload.owner or self.limits.anonymous_dedup:
            source = await self.store.find_complete(sha256, length, upload.owner)
            if source is not None:
                return await self._adopt(upload, source, sha256)
        if self.limits.proof_dedup:
            other = await self.store.find_complete(sha256, length, None)
            if other is not None:
                upload.challenge = Challenge.new(length, other.id).to_json()
                await self.store.save(upload)
        return upload

    async def prove(self, upload_id: str, proof: bytes, *, owner: str = "") -> Upload:
        """Answer to the upload's challenge: the right answer completes it at once."""
        async with self._lock(upload_id):
            upload = await self._live(upload_id, owner)
            if upload.challenge is None:
                raise ProofRejected("no proof of possession was asked for this upload")
            challenge = Challenge.from_json(upload.challenge)
            upload.challenge = None  # one answer per challenge: no guessing
            await self.store.save(upload)
        gone = "that content is no longer stored; send the bytes instead"
        source = await self.store.get(challenge.source)
        if source is None or not source.complete or source.sha256 != upload.expected_sha256:
            raise ProofRejected(gone)
        if upload.length != source.length or upload.expected_sha256 is None:
            raise ProofRejected("the declared length differs from the stored content")
        blocks = []
        try:
            for first, last in challenge.ranges:
                async for block in self.storage.read(source.id, first, last + 1):
                    blocks.append(block)
        except FileNotFoundError:  # deleted since: nothing to share any more
            raise ProofRejected(gone) from None
        if not matches(answer(challenge.nonce, blocks), proof):
            raise ProofRejected("the proof does not match the content; send the bytes instead")
        return await self._adopt(upload, source, upload.expected_sha256)

    async def _adopt(self, upload: Upload, source: Upload, sha256: str) -> Upload:
        """Give ``upload`` the stored bytes of ``source`` and complete it, without a byte sent."""
        # Holding the source's lock keeps it from being deleted while its bytes are linked.
        async with self._lock(source.id):
            shared = await self.storage.share(source.id, upload.id)
        if not shared:
            return upload
        async with self._lock(upload.id):
            upload.offset = upload.length or 0
            # The bytes are the very ones already verified as ``sha256``: no second read.
            completed = await self._complete(upload, known_sha256=sha256)
        log.info("instant upload %s: same content as %s", upload.id, source.id)
        return completed

    async def create_final(
        self,
        part_ids: Sequence[str],
        *,
        metadata_raw: str | None = None,
        owner: str = "",
        expected_sha256: str | None = None,
        quota: Quota = NO_QUOTA,
    ) -> Upload:
        repeated = await self._same_final(part_ids, owner, expected_sha256)
        if repeated is not None:
            # The same request again (its answer was lost, or it timed out while the first one
            # was verifying): the same upload, once its assembly is over.
            return await self._try_assemble(repeated.id)
        parts: list[Upload] = []
        records = await self.store.get_many(part_ids)
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
            self._check_size(sum(known), quota)
        await self._check_capacity()
        await self._check_quota(owner, quota, 0, counts_as_file=True)  # parts hold the bytes
        now = time.time()
        final = Upload(
            id=new_upload_id(),
            length=None,
            state=UploadState.ACTIVE,
            created_at=now,
            updated_at=now,
            expires_at=self._expiry(now),
            metadata_raw=metadata_raw,
            concat=ConcatKind.FINAL,
            parts=tuple(part_ids),
            owner=owner,
            expected_sha256=expected_sha256,
        )
        self.policy.check(final.text_metadata(*NAME_KEYS), final.text_metadata(*TYPE_KEYS))
        await self.store.insert(final)
        await self.storage.create(final.id)
        log.info("created final upload %s from %d partials", final.id, len(part_ids))
        return await self._try_assemble(final.id)

    async def _same_final(
        self, part_ids: Sequence[str], owner: str, expected_sha256: str | None
    ) -> Upload | None:
        """A live final upload of ``owner`` made of exactly these partials, in this order."""
        if not part_ids:
            return None
        for final in await self.store.finals_listing(part_ids[0]):
            same = final.owner == owner and final.parts == tuple(part_ids)
            if same and final.state in (UploadState.ACTIVE, UploadState.COMPLETE):
                if expected_sha256 and final.expected_sha256 not in (None, expected_sha256):
                    raise DigestConflict("the final upload already declares a different SHA-256")
                return final
        return None

    # -- reading state --------------------------------------------------------------------

    async def complete_direct(
        self, upload_id: str, parts: Sequence[tuple[int, str]], *, owner: str = ""
    ) -> Upload:
        """Finish an upload whose parts the client sent straight to the store: the store's
        own record of the parts decides its length, then the usual checks run (size, content
        policy, digest, scan) before it is complete."""
        if not isinstance(self.storage, DirectUploads):
            raise NotFound("this server's storage takes no direct uploads")
        async with self._lock(upload_id):
            upload = await self._live(upload_id, owner)
            if upload.complete:
                return upload
            length = await self.storage.complete_parts(upload_id, parts)
            try:
                self._check_size(length)
            except TooLarge:
                await self._fail(upload, "was larger than the maximum size")
                raise
            upload.length = upload.offset = length
            await self.store.save(upload)
            return await self._complete(upload)

    async def owner_of(self, upload_id: str) -> str | None:
        """The owner of a live upload, for checks that carry their own proof (signed links)."""
        upload = await self.store.get(upload_id) if is_upload_id(upload_id) else None
        return None if upload is None or upload.state.gone else upload.owner

    async def status(self, upload_id: str, *, owner: str = "") -> Upload:
        upload = await self._live(upload_id, owner)
        if upload.state is UploadState.ACTIVE:
            if upload.is_final:
                return await self._try_assemble(upload.id)
            upload.offset = await self.storage.offset(upload.id)
            if upload.length is not None and upload.offset == upload.length:
                # The bytes landed but the process died before the record said so.
                async with self._lock(upload.id):
                    return await self._complete(await self._live(upload_id, owner))
        elif upload.complete:
            upload.offset = upload.length or 0
        return upload

    async def open_download(
        self, upload_id: str, start: int | None = None, end: int | None = None, *, owner: str = ""
    ) -> tuple[Upload, AsyncIterator[bytes]]:
        upload = await self.status(upload_id, owner=owner)
        if not upload.complete:
            raise UploadIncomplete(
                f"upload {upload_id} has {upload.offset} of {upload.length} bytes; "
                "it can be downloaded once complete"
            )
        size = upload.length or 0
        first = start or 0
        stop = size if end is None else end
        return upload, self.storage.read(upload.id, first, stop)

    # -- writing --------------------------------------------------------------------------

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
        hasher = None
        if checksum is not None:
            hasher = new_hasher(checksum[0])
            if hasher is None:
                raise UnsupportedChecksumAlgorithm(
                    f"checksum algorithm {checksum[0]!r} is not supported"
                )
        async with self._lock(upload_id):
            upload = await self._live(upload_id, owner)
            if upload.is_final:
                raise ModifyFinal("a final upload is assembled from its partials, not patched")
            if new_length is not None:
                await self._declare_length(upload, new_length)
            if declared_sha256 is not None and declared_sha256 != upload.expected_sha256:
                if upload.expected_sha256 is not None:
                    raise DigestConflict("the upload already declares a different SHA-256")
                upload.expected_sha256 = declared_sha256
                await self.store.save(upload)
            current = await self.storage.offset(upload.id)
            if upload.complete or (upload.length is not None and current == upload.length):
                current = upload.length or 0
            if offset != current:
                raise OffsetMismatch(f"the upload's offset is {current}, the request says {offset}")
            limit = self._remaining(upload, current)
            if content_length is not None and limit is not None and content_length > limit:
                raise self._overflow(upload, limit)
            whole = self._take_running(upload, current)
            if whole is not None and current == 0 and checksum and checksum[0] == "sha256":
                # From offset 0 the request's SHA-256 is the upload's running one: hash once.
                hasher = whole
            hashers = list({id(h): h for h in (hasher, whole) if h is not None}.values())
            writer = await self.storage.open_writer(upload.id, current, atomic=hasher is not None)
            try:
                received = await pump(body, writer, hashers, limit)
            except BodyInterrupted:
                # An interrupted request keeps what arrived, unless a checksum has to vouch for it.
                with contextlib.suppress(Exception):
                    if hasher is None:
                        upload.offset = await writer.commit()
                        await self._after_write(upload, current)
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
                self._keep_running(upload.id, upload.offset, whole)
            return await self._after_write(upload, current)

    async def _declare_length(self, upload: Upload, length: int) -> None:
        if upload.length is not None:
            if upload.length != length:
                raise LengthAlreadySet(f"the upload's length is already {upload.length}")
            return
        self._check_size(length)
        current = await self.storage.offset(upload.id)
        if length < current:
            raise InvalidHeader(f"Upload-Length {length} is less than the {current} bytes stored")
        upload.length = length
        await self.store.save(upload)

    def _remaining(self, upload: Upload, current: int) -> int | None:
        if upload.length is not None:
            return upload.length - current
        if self.limits.max_size:
            return self.limits.max_size - current
        return None

    def _overflow(self, upload: Upload, limit: int) -> HaulError:
        if upload.length is None:
            return TooLarge(f"the upload would exceed the maximum size {self.limits.max_size}")
        return ExceedsLength(f"the request carries more than the {limit} bytes still owed")

    async def _after_write(self, upload: Upload, previous: int) -> Upload:
        if (
            previous < SNIFF_BYTES <= upload.offset
            and upload.concat is not ConcatKind.PARTIAL
            and self.storage.reads_while_writing
        ):
            await self._check_content(upload)  # as soon as the first bytes tell the kind
        now = time.time()
        upload.updated_at = now
        if upload.length is not None and upload.offset == upload.length:
            return await self._complete(upload)
        upload.expires_at = self._expiry(now)
        await self.store.save(upload)
        return upload

    async def _complete(
        self, upload: Upload, known_sha256: str | None = None, parts: Sequence[Upload] = ()
    ) -> Upload:
        """Mark complete (idempotent) and assemble final uploads that were waiting for it.
        A final upload comes with its ``parts``."""
        if upload.state is not UploadState.ACTIVE:
            return upload
        if not upload.is_final:  # a final upload was made whole by its concatenation
            await self.storage.finish(upload.id)
        whole_file = upload.concat is not ConcatKind.PARTIAL
        if whole_file:
            await self._check_content(upload)
        if known_sha256 is not None:
            upload.sha256 = known_sha256
        elif self._wants_digest(upload):
            upload.sha256 = await self._digest_of(upload, parts)
            if upload.expected_sha256 and upload.sha256 != upload.expected_sha256:
                await self._fail(upload)
                raise DigestMismatch(
                    f"the stored bytes hash to sha-256 {upload.sha256}, but the client declared "
                    f"{upload.expected_sha256}; the upload was discarded"
                )
            if self.limits.instant_upload:
                await self._store_once(upload, upload.sha256)
        if whole_file and self.scanner is not None:
            await self._scan(upload)
        upload.state = UploadState.COMPLETE
        upload.offset = upload.length or 0
        upload.updated_at = time.time()
        # A partial is only worth keeping until a final upload takes it: one that never comes
        # (an abandoned parallel upload) must not hold its bytes forever.
        partial = upload.concat is ConcatKind.PARTIAL
        upload.expires_at = self._expiry(upload.updated_at) if partial else None
        await self.store.save(upload)
        log.info("upload %s complete (%s bytes)", upload.id, upload.length)
        if upload.concat is ConcatKind.PARTIAL:
            if self.limits.verify_digest:
                self._ordered.completed(upload)
            for final in await self.store.finals_waiting_for(upload.id):
                # The final's own lock is taken inside; the partial's lock is ours already.
                task = asyncio.create_task(self._assemble_quietly(final.id))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        return upload

    async def _assemble_quietly(self, final_id: str) -> None:
        try:
            await self._try_assemble(final_id)
        except HaulError as exc:
            log.info("final upload %s not assembled yet: %s", final_id, exc.message)

    async def _try_assemble(self, final_id: str) -> Upload:
        """Assemble a final upload if every partial is complete; return its current state."""
        async with self._lock(final_id):
            final = await self.store.get(final_id)
            if final is None:
                raise NotFound(f"upload {final_id} does not exist")
            if final.state is not UploadState.ACTIVE:
                final.offset = final.length or 0
                return final
            parts: list[Upload] = []
            records = await self.store.get_many(final.parts)
            for part_id in final.parts:
                part = records.get(part_id)
                if part is None or part.state.gone:
                    raise Gone(f"partial upload {part_id} of final upload {final_id} is gone")
                if part.state is UploadState.ACTIVE:
                    part = await self.status(part_id, owner=part.owner)
                if not part.complete:
                    return final  # concatenation-unfinished: wait for the rest
                parts.append(part)
            final.length = sum(p.length or 0 for p in parts)
            self._check_size(final.length)
            await self.storage.concatenate(final.id, final.parts)
            refused: HaulError | None = None
            try:
                final = await self._complete(final, parts=parts)
            except (TypeNotAllowed, ScanRejected) as error:
                refused = error
        ids = [part.id for part in parts]
        if refused is not None:  # nothing of a refused upload is kept: not its parts either
            await _each(ids, lambda part_id: self._retire(part_id, UploadState.FAILED))
            raise refused
        if self.limits.keep_partials:
            await _each(ids, self._keep)
        else:
            await _each(ids, lambda part_id: self._retire(part_id, UploadState.CONSUMED))
        return final

    async def _keep(self, part_id: str) -> None:
        """A partial kept after its concatenation (--keep-partials) no longer expires."""
        async with self._lock(part_id):
            part = await self.store.get(part_id)
            if part is not None and part.complete and part.expires_at is not None:
                part.expires_at = None
                await self.store.save(part)

    # -- digests --------------------------------------------------------------------------

    def _wants_digest(self, upload: Upload) -> bool:
        """A partial is hashed only when its client declared a digest: otherwise its bytes are
        hashed as part of the final upload, and hashing them twice would be wasted."""
        if upload.expected_sha256:
            return True
        return self.limits.verify_digest and upload.concat is not ConcatKind.PARTIAL

    def _take_running(self, upload: Upload, offset: int) -> Hasher | None:
        """The running SHA-256 of bytes [0, offset), or a fresh one at 0, taken out of the
        cache: the caller puts it back only once its bytes are committed, so a refused request
        cannot leave a wrong state behind. None when this process cannot continue it (the
        upload is then hashed from storage when it completes), or needs no digest."""
        if not self._wants_digest(upload):
            return None
        kept = self._running.pop(upload.id, None)
        if kept is not None and kept[0] == offset:
            return kept[1]
        return hashlib.sha256() if offset == 0 else None

    def _keep_running(self, upload_id: str, offset: int, hasher: Hasher) -> None:
        while len(self._running) >= MAX_RUNNING_DIGESTS:
            self._running.pop(next(iter(self._running)))
        self._running[upload_id] = (offset, hasher)

    async def _digest_of(self, upload: Upload, parts: Sequence[Upload] = ()) -> str:
        length = upload.length or 0
        kept = self._running.pop(upload.id, None)
        if kept is not None and kept[0] == length:
            return kept[1].digest().hex()
        ordered = await self._ordered.digest_of(parts)
        if ordered is not None:
            log.info(
                "upload %s: %d of %d partials were hashed as they arrived",
                upload.id, ordered[1], len(parts),
            )  # fmt: skip
            return ordered[0]
        # Written by another process, resumed after a restart, or concatenated: read it back.
        digest = hashlib.sha256()
        await digest_stream(self.storage.read(upload.id, 0, length), digest)
        return digest.hexdigest()

    async def _store_once(self, upload: Upload, sha256: str) -> None:
        """Identical content is stored once: when another upload already holds these bytes,
        this one's copy is replaced by a share of them. Invisible to clients, so any owner's
        upload may serve."""
        twin = await self.store.find_complete(sha256, upload.length or 0, None)
        if twin is None or twin.id == upload.id:
            return
        async with self._lock(twin.id):
            if await self.storage.share(twin.id, upload.id):
                log.info("upload %s stored once with %s", upload.id, twin.id)

    async def _fail(self, upload: Upload, why: str = "failed verification") -> None:
        await self._tombstone(upload, UploadState.FAILED)
        log.warning("upload %s %s and was discarded", upload.id, why)

    async def _check_content(self, upload: Upload) -> None:
        """The first bytes must be a kind the policy allows, and the kind the name says."""
        if not self.policy.active:
            return
        stop = min(SNIFF_BYTES, upload.length if upload.length is not None else upload.offset)
        head = b"".join([block async for block in self.storage.read(upload.id, 0, stop)])
        try:
            self.policy.check_content(
                head, upload.text_metadata(*NAME_KEYS), upload.text_metadata(*TYPE_KEYS)
            )
        except TypeNotAllowed as refused:
            await self._fail(upload, f"was refused by the content policy ({refused.message})")
            raise

    async def _scan(self, upload: Upload) -> None:
        assert self.scanner is not None
        verdict = await self.scanner.scan(
            upload, self.storage.read(upload.id, 0, upload.length or 0)
        )
        if verdict is not None:
            await self._fail(upload, f"was refused by the scanner ({verdict})")
            raise ScanRejected(f"the file was refused by the scanner: {verdict}")

    # -- ending ---------------------------------------------------------------------------

    async def terminate(self, upload_id: str, *, owner: str = "") -> None:
        await self._live(upload_id, owner)
        await self._retire(upload_id, UploadState.TERMINATED)
        log.info("upload %s terminated", upload_id)

    async def _retire(self, upload_id: str, state: UploadState) -> None:
        """Turn an upload into a tombstone, then drop its bytes (the order makes a crash safe:
        a tombstone's bytes are removed again by the collector)."""
        async with self._lock(upload_id):
            upload = await self.store.get(upload_id)
            if upload is None or upload.state.gone:
                return
            await self._tombstone(upload, state)

    async def _tombstone(self, upload: Upload, state: UploadState) -> None:
        """Record the end first, then drop the bytes; the caller holds the upload's lock."""
        upload.state = state
        upload.updated_at = time.time()
        upload.expires_at = None
        await self.store.save(upload)
        await self.storage.delete(upload.id)
        self._running.pop(upload.id, None)

    async def collect_garbage(self, *, now: float | None = None, batch: int = 500) -> GcReport:
        """Expire unfinished uploads, purge old tombstones, remove bytes nobody references."""
        moment = time.time() if now is None else now
        report = GcReport()
        for upload in await self.store.expired(moment, batch):
            if upload.complete and await self.store.finals_waiting_for(upload.id):
                continue  # a final upload is about to take it
            with contextlib.suppress(HaulError):
                await self._retire(upload.id, UploadState.EXPIRED)
                report.expired += 1
                report.ids.append(upload.id)
        for tomb in await self.store.tombstones(moment - self.limits.tombstone_ttl, batch):
            with contextlib.suppress(HaulError):
                async with self._lock(tomb.id):
                    await self.storage.delete(tomb.id)
                    await self.store.delete(tomb.id)
                await self.locker.forget(tomb.id)
                report.purged_tombstones += 1
        async for upload_id, changed in self.storage.stored_ids():
            if changed > moment - self.limits.orphan_grace:
                continue
            record = await self.store.get(upload_id)
            if record is None or record.state.gone:
                with contextlib.suppress(HaulError):
                    async with self._lock(upload_id):
                        await self.storage.delete(upload_id)
                    report.orphans += 1
        if report.expired or report.purged_tombstones or report.orphans:
            log.info(
                "gc: %d expired, %d tombstones purged, %d orphans removed",
                report.expired,
                report.purged_tombstones,
                report.orphans,
            )
        return report

    # -- helpers --------------------------------------------------------------------------

    def _lock(self, upload_id: str) -> contextlib.AbstractAsyncContextManager[None]:
        return self.locker.lock(upload_id, self.limits.lock_timeout)

    async def _live(self, upload_id: str, owner: str) -> Upload:
        upload = await self.store.get(upload_id) if is_upload_id(upload_id) else None
        if upload is None or upload.owner != owner:
            raise NotFound(f"upload {upload_id} does not exist")
        if upload.state.gone:
            if upload.state is UploadState.FAILED:
                raise Gone(f"upload {upload_id} failed verification against its declared digest")
            raise Gone(f"upload {upload_id} was {upload.state.value}")
        return upload

    def _check_size(self, length: int, quota: Quota = NO_QUOTA) -> None:
        if self.limits.max_size and length > self.limits.max_size:
            raise TooLarge(
                f"upload length {length} exceeds the maximum size {self.limits.max_size}"
            )
        if quota.max_size and length > quota.max_size:
            raise TooLarge(f"upload length {length} exceeds your maximum size {quota.max_size}")

    async def _check_quota(
        self, owner: str, quota: Quota, length: int, *, counts_as_file: bool
    ) -> None:
        if not (quota.max_bytes or quota.max_active or quota.per_hour):
            return
        now = time.time()
        usage = await self.store.usage(owner, now)
        if quota.max_bytes and usage.bytes + length > quota.max_bytes:
            raise QuotaExceeded(
                f"this upload of {length} bytes would bring you to {usage.bytes + length} bytes; "
                f"your quota is {quota.max_bytes} (delete uploads to make room)"
            )
        if not counts_as_file:
            return
        if quota.max_active and usage.active >= quota.max_active:
            raise RateLimited(
                f"you have {usage.active} unfinished uploads, the most allowed at once; "
                "finish or delete one first",
                retry_after=30,
            )
        if quota.per_hour and usage.created_last_hour >= quota.per_hour:
            oldest = usage.oldest_last_hour or now
            raise RateLimited(
                f"you created {usage.created_last_hour} uploads in the last hour, the most allowed",
                retry_after=oldest + 3600 - now,
            )

    async def _check_capacity(self) -> None:
        cap = self.limits.max_active_uploads
        if cap and await self.store.count_active() >= cap:
            raise TooManyUploads(
                f"the server already holds {cap} unfinished uploads; try again later",
                headers={"Retry-After": "60"},
            )

    def _expiry(self, now: float) -> float | None:
        return now + self.limits.expiration if self.limits.expiration else None
