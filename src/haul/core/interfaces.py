"""The small interfaces the core needs from the outside world.

A storage backend keeps bytes and is the truth for how many are durable; a metadata store keeps
upload records; a locker serialises requests on one upload across every process and node.
The core only ever talks to these protocols, never to a concrete library.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from haul.core.models import Upload, UploadState, Usage


class StoredBytesMissing(LookupError):
    """Raised by every storage backend when an upload it is asked to read (or to build on)
    has no stored bytes: deleted, never created, or collected. The core maps it to what the
    client should hear; no backend's own error type (OSError, botocore's ClientError) leaks."""


class ChunkWriter(Protocol):
    """Appends one request's bytes at the upload's current end.

    Opened with ``atomic=True`` the bytes only count once :meth:`commit` is called: a crash or
    :meth:`discard` leaves the upload exactly as before. Otherwise whatever reached the storage
    counts even if the writer is never committed (an interrupted request keeps what arrived).
    """

    async def write(self, pieces: Sequence[bytes]) -> None:
        """Append one block, given as the pieces it arrived in (joining them would cost a copy)."""
        ...

    async def commit(self) -> int:
        """Make the written bytes durable and return the new offset."""
        ...

    async def discard(self) -> None:
        """Forget every byte written through this writer."""
        ...


class Storage(Protocol):
    """Bytes by name: an upload's name is ``Upload.stored_as``, its id, or ``<key>/<id>``
    below the storage key a pre-create hook chose (parameters say ``upload_id`` for short)."""

    # Whether read() serves an upload's first bytes before it is complete (object stores
    # assemble an object only at the end): the content policy then checks them early.
    reads_while_writing: bool

    async def create(self, upload_id: str, length: int | None = None) -> None:
        """Make room for a new, empty upload; an upload that has room already keeps it.
        ``length`` is the upload's, when known (an object store may size its parts by it)."""
        ...

    async def offset(self, upload_id: str) -> int:
        """Bytes durably stored for the upload: the only truth for ``Upload-Offset``."""
        ...

    async def open_writer(self, upload_id: str, offset: int, *, atomic: bool) -> ChunkWriter:
        """Start appending at ``offset``; raises OffsetMismatch if that is not the current end.
        The caller holds the upload's lock."""
        ...

    async def concatenate(self, upload_id: str, part_ids: Sequence[str]) -> None:
        """Store the concatenation of completed uploads as ``upload_id`` (all or nothing);
        StoredBytesMissing if one of them has no bytes."""
        ...

    async def share(self, source_id: str, upload_id: str) -> bool:
        """Make ``upload_id`` hold the bytes of the completed ``source_id`` by sharing them
        (all or nothing), replacing identical bytes it may already hold. False when the
        source's bytes are gone."""
        ...

    async def finish(self, upload_id: str) -> None:
        """Every byte has arrived: make the upload one readable whole (idempotent)."""
        ...

    def read(self, upload_id: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Stream bytes ``[start, end)`` of a finished upload; StoredBytesMissing if it has
        none."""
        ...

    async def delete(self, upload_id: str) -> None:
        """Remove the upload's bytes; deleting what does not exist is not an error."""
        ...

    def stored_ids(self) -> AsyncIterator[tuple[str, float]]:
        """The name (``Upload.stored_as``: the id, below its storage key if it has one) of
        every upload with bytes in the storage, with the time it last changed."""
        ...

    async def open(self) -> None:
        """Connect (on startup), so the first upload does not wait for it."""
        ...

    async def close(self) -> None:
        """Release connections (on shutdown)."""
        ...


@runtime_checkable
class DirectUploads(Protocol):
    """A storage whose clients may upload parts straight to it (presigned S3 multipart)."""

    async def multipart_id(self, upload_id: str) -> str | None:
        """The store's id of the upload's unfinished multipart upload; None once finished."""
        ...

    async def presign_part(
        self, upload_id: str, part_number: int, ttl: int, *, md5: str | None = None
    ) -> str:
        """A URL that accepts a PUT of one part for ``ttl`` seconds, without credentials.
        With ``md5`` (the part's MD5, base64) the URL is signed with that Content-MD5: the PUT
        must send it, and the store refuses a part whose bytes hash otherwise."""
        ...

    async def list_parts(self, upload_id: str) -> list[dict[str, object]]:
        """The parts received so far: PartNumber, Size, ETag."""
        ...

    async def complete_parts(self, upload_id: str, parts: Sequence[tuple[int, str]]) -> int:
        """Join the named parts (number, ETag) into the finished upload, after checking each
        is one the store received; returns the upload's size."""
        ...


@runtime_checkable
class InPlaceConcat(Protocol):
    """A storage that can write partial uploads straight into their final upload's place,
    so that the concatenation copies nothing (S3: parts of the final's multipart upload)."""

    async def place(
        self, part_name: str, final_name: str, layout: Sequence[int], index: int
    ) -> bool:
        """Before any byte of partial ``index`` is written, make its bytes land at
        ``[layout[index], layout[index + 1])`` of the final's bytes; ``layout`` is the
        cumulative offsets ``[0, L1, L1 + L2, ..., total]``. False when the layout does not
        allow it (then for every index) or the partial holds bytes already. The caller holds
        the partial's lock; the partial stays readable for its offset and resumable alone."""
        ...


class MetadataStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def insert(self, upload: Upload) -> None:
        """Add a new record; raises UploadExists when one with its id is already there."""
        ...

    async def get(self, upload_id: str) -> Upload | None: ...

    async def get_many(self, upload_ids: Sequence[str]) -> dict[str, Upload]:
        """The records that exist among ``upload_ids``, by id (one query, not one per id)."""
        ...

    async def save(self, upload: Upload) -> None:
        """Write back a record the caller holds the lock for."""
        ...

    async def delete(self, upload_id: str) -> None: ...

    async def expired(self, now: float, limit: int) -> list[Upload]:
        """Uploads whose ``expires_at`` has passed: unfinished ones, and complete partial
        uploads no final upload took."""
        ...

    async def tombstones(self, before: float, limit: int) -> list[Upload]:
        """Gone uploads last changed before ``before``."""
        ...

    async def finals_waiting_for(self, part_id: str) -> list[Upload]:
        """Active final uploads that list ``part_id`` among their partials."""
        ...

    async def finals_listing(self, part_id: str) -> list[Upload]:
        """Final uploads in any state that list ``part_id`` among their partials."""
        ...

    async def count_active(self) -> int: ...

    async def listing(
        self,
        owner: str,
        *,
        states: Sequence[UploadState],
        since: float | None = None,
        after: tuple[float, str] | None = None,
        limit: int = 100,
    ) -> list[Upload]:
        """``owner``'s uploads in ``states`` (partials left out: they are parts of a final),
        created at or after ``since``, ordered by (created_at, id), starting after the
        cursor ``after``: one page of at most ``limit``."""
        ...

    async def usage(self, owner: str, now: float) -> Usage:
        """What ``owner`` holds and created in the hour before ``now``."""
        ...

    async def find_complete(self, sha256: str, length: int, owner: str | None) -> Upload | None:
        """A complete upload of ``owner`` (of anyone for None) with this digest and length."""
        ...

    async def verify_claim(self, now: float, lease: float, limit: int) -> list[Upload]:
        """Take up to ``limit`` complete uploads whose SHA-256 is pending and free to verify
        (``verify_at`` at or before ``now``) by setting ``verify_at`` to ``now + lease``,
        atomically: no two verifiers (on any node) take one upload at once."""
        ...

    async def verify_hold(self, upload_id: str, until: float) -> None:
        """Extend a verifier's lease on a still pending upload to ``until``."""
        ...

    async def find_file(self, sha256: str, owner: str) -> Upload | None:
        """A complete upload of ``owner`` with this digest, of any length, that is a file of
        its own (not a partial upload waiting to be joined)."""
        ...


@dataclass(frozen=True)
class OutboxEntry:
    """One event waiting to be delivered: its body is fixed when it is written, so every retry
    sends the same bytes under the same id."""

    id: str
    upload_id: str
    type: str
    created_at: float
    body: str
    attempts: int = 0


@runtime_checkable
class Outbox(Protocol):
    """A record store that also keeps the events still to be delivered (the hooks' outbox).

    Per upload, only the oldest entry left is ever claimable, so its events go out in order;
    a claim is a lease, so no two workers (on any node) hold one entry at once."""

    async def outbox_add(self, entry: OutboxEntry) -> None: ...

    async def outbox_claim(
        self, worker: str, now: float, lease: float, limit: int
    ) -> list[OutboxEntry]:
        """Lease up to ``limit`` due entries to ``worker`` until ``now + lease``: those whose
        retry time has come, that no live lease holds, and that are their upload's oldest."""
        ...

    async def outbox_done(self, entry_ids: Sequence[str]) -> None:
        """Delivered (or dropped): the entries are removed."""
        ...

    async def outbox_retry(self, entry_id: str, worker: str, next_at: float) -> None:
        """Not delivered: release ``worker``'s lease and try again from ``next_at``."""
        ...

    async def outbox_pending(self) -> int:
        """Entries not delivered yet."""
        ...

    async def progress_due(self, upload_id: str, at: float, interval: float) -> bool:
        """Whether a progress event of ``upload_id`` at ``at`` is due: none was taken less
        than ``interval`` before it, by any node. Taking it records ``at``, atomically."""
        ...

    async def progress_forget(self, upload_id: str) -> None:
        """The upload ended: its progress time is no longer needed."""
        ...


class Locker(Protocol):
    def lock(self, upload_id: str, timeout: float) -> AbstractAsyncContextManager[None]:
        """Hold the upload's exclusive lock; raise Locked if it is not free within ``timeout``."""
        ...

    async def forget(self, upload_id: str) -> None:
        """Drop lock state kept for an upload that no longer exists."""
        ...

    async def close(self) -> None:
        """Release connections (on shutdown)."""
        ...
