"""The upload record and its life cycle."""

from __future__ import annotations

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
    # Not persisted: filled from the storage, which is the only truth for it.
    offset: int = field(default=0, compare=False)

    @property
    def metadata(self) -> dict[str, bytes]:
        return parse_metadata(self.metadata_raw) if self.metadata_raw else {}

    @property
    def is_final(self) -> bool:
        return self.concat is ConcatKind.FINAL

    @property
    def complete(self) -> bool:
        return self.state is UploadState.COMPLETE

    def text_metadata(self, *keys: str) -> str | None:
        """The first of ``keys`` present in the metadata, decoded leniently as UTF-8."""
        meta = self.metadata
        for key in keys:
            if key in meta:
                return meta[key].decode("utf-8", "replace")
        return None
