"""The upload record and its life cycle."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from haul.wire.tus import parse_metadata


class UploadState(StrEnum):
    ACTIVE = "active"  # accepting bytes (or, for a final upload, waiting for its partials)
    COMPLETE = "complete"  # every byte stored; served by GET
    TERMINATED = "terminated"  # deleted by its client; kept as a tombstone so requests get 410
    EXPIRED = "expired"  # not finished in time; bytes removed, tombstone kept
    CONSUMED = "consumed"  # a partial whose bytes now live in a final upload
    FAILED = "failed"  # its bytes did not match the digest the client declared; bytes removed

    @property
    def gone(self) -> bool:
        return self is not UploadState.ACTIVE and self is not UploadState.COMPLETE


@dataclass(frozen=True)
class Quota:
    """What one owner may use; 0 = no limit. From settings, or per token (JWT claims)."""

    max_size: int = 0  # largest single upload
    max_bytes: int = 0  # bytes held: complete and unfinished uploads, partials included
    max_active: int = 0  # unfinished uploads at once (files: partials are parts of one)
    per_hour: int = 0  # uploads created in the last hour (files, not partials)


@dataclass(frozen=True)
class Usage:
    bytes: int  # declared lengths of the owner's live uploads
    active: int  # unfinished uploads (not counting partials)
    created_last_hour: int  # uploads (not partials) created in the last hour
    oldest_last_hour: float | None  # when the oldest of those was created


class ConcatKind(StrEnum):
    PARTIAL = "partial"
    FINAL = "final"


@dataclass
class Upload:
    id: str
    length: int | None  # None while the length is deferred
    state: UploadState
    created_at: float
    updated_at: float
    expires_at: float | None = None
    metadata_raw: str | None = None  # Upload-Metadata exactly as received, echoed back verbatim
    concat: ConcatKind | None = None
    parts: tuple[str, ...] = ()  # partial upload ids of a final upload, in order
    owner: str = ""
    expected_sha256: str | None = None  # hex digest the client declared for the whole upload
    sha256: str | None = None  # hex digest of the stored bytes, set when the upload completes
    challenge: str | None = None  # pending proof-of-possession challenge (JSON), one use only
    # Where the bytes land below the storage's root (a key prefix on S3, a subdirectory on
    # disk), chosen by a pre-create hook; fixed at creation. None: the root.
    storage_key: str | None = None
    # SHA-256 of what the creation request asked for (see creation.request_digest): a retry
    # with the same Idempotency-Key is the same request even when a hook changed the upload.
    request_digest: str | None = None
    # Set while the SHA-256 of a complete upload is still to be read back and verified (in the
    # background, see core/verifier.py): the time from which a verifier may take it, a lease
    # once one has. None when nothing is pending. Content is shared only once verified.
    verify_at: float | None = None
    # Not persisted: filled from the storage, which is the only truth for it.
    offset: int = field(default=0, compare=False)

    @property
    def metadata(self) -> dict[str, bytes]:
        return parse_metadata(self.metadata_raw) if self.metadata_raw else {}

    @property
    def stored_as(self) -> str:
        """The name the storage knows the bytes by: ``<storage_key>/<id>``, or the id."""
        return f"{self.storage_key}/{self.id}" if self.storage_key else self.id

    @property
    def is_final(self) -> bool:
        return self.concat is ConcatKind.FINAL

    @property
    def complete(self) -> bool:
        return self.state is UploadState.COMPLETE

    @property
    def digest_pending(self) -> bool:
        return self.verify_at is not None

    def text_metadata(self, *keys: str) -> str | None:
        """The first of ``keys`` present in the metadata, decoded leniently as UTF-8."""
        meta = self.metadata
        for key in keys:
            if key in meta:
                return meta[key].decode("utf-8", "replace")
        return None


_KEY_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
# What the storages append to an upload's name for files and objects of their own.
_RESERVED_ENDINGS = (".pending", ".assembling", ".parts", ".old", ".state")


def storage_key_problem(key: str) -> str | None:
    """Why ``key`` cannot be a storage key (folders below the storage's root), or None.
    Refused: traversal (``..``, absolute paths, empty segments), hidden names, names that look
    like an upload id or end like haul's own files, more than 8 levels or 255 characters.
    The upload's id is appended to the key, so two uploads never collide."""
    if not key or len(key) > 255:
        return "a storage key has 1 to 255 characters"
    segments = key.split("/")
    if len(segments) > 8:
        return "a storage key has at most 8 levels"
    for segment in segments:
        if not _KEY_SEGMENT.fullmatch(segment):
            return (
                f"{segment!r} is not a folder name: letters, digits, '.', '_' and '-', "
                "starting with a letter or digit, no empty levels"
            )
        if (
            _UPLOAD_ID.fullmatch(segment)
            or segment.endswith(_RESERVED_ENDINGS)
            or ".tail." in segment
        ):
            return f"{segment!r} looks like one of haul's own names"
    return None
