"""The upload record as one row of the ``uploads`` table, shared by the SQL stores (SQLite,
PostgreSQL): the column list, and the conversions both ways; the same for an outbox entry."""

from __future__ import annotations

import json
from typing import Any

from haul.core.interfaces import OutboxEntry
from haul.core.models import ConcatKind, Upload, UploadState

COLUMNS = (
    "id, length, state, created_at, updated_at, expires_at, metadata, concat, parts, owner, "
    "expected_sha256, sha256, challenge, storage_key, request_digest, verify_at"
)
# What a save may change (the rest is fixed at creation), in the order of update_values().
UPDATABLE = (
    "length", "state", "updated_at", "expires_at", "metadata", "expected_sha256", "sha256",
    "challenge", "verify_at",
)  # fmt: skip
GONE_STATES = tuple(s.value for s in UploadState if s.gone)


def row_to_upload(row: Any) -> Upload:
    """A row selected with COLUMNS (any sequence indexed by position)."""
    return Upload(
        id=row[0],
        length=row[1],
        state=UploadState(row[2]),
        created_at=row[3],
        updated_at=row[4],
        expires_at=row[5],
        metadata_raw=row[6],
        concat=ConcatKind(row[7]) if row[7] else None,
        parts=tuple(json.loads(row[8])),
        owner=row[9],
        expected_sha256=row[10],
        sha256=row[11],
        challenge=row[12],
        storage_key=row[13],
        request_digest=row[14],
        verify_at=row[15],
    )


def upload_values(upload: Upload) -> tuple[Any, ...]:
    """The values of COLUMNS for an insert, in order."""
    return (
        upload.id,
        upload.length,
        upload.state.value,
        upload.created_at,
        upload.updated_at,
        upload.expires_at,
        upload.metadata_raw,
        upload.concat.value if upload.concat else None,
        json.dumps(list(upload.parts)),
        upload.owner,
        upload.expected_sha256,
        upload.sha256,
        upload.challenge,
        upload.storage_key,
        upload.request_digest,
        upload.verify_at,
    )


def update_values(upload: Upload) -> tuple[Any, ...]:
    """The values of UPDATABLE, in order, then the id (for ``WHERE id = ...``)."""
    return (
        upload.length,
        upload.state.value,
        upload.updated_at,
        upload.expires_at,
        upload.metadata_raw,
        upload.expected_sha256,
        upload.sha256,
        upload.challenge,
        upload.verify_at,
        upload.id,
    )


OUTBOX_COLUMNS = "id, upload_id, type, created_at, body, attempts"


def row_to_entry(row: Any) -> OutboxEntry:
    return OutboxEntry(
        id=row[0], upload_id=row[1], type=row[2], created_at=row[3], body=row[4], attempts=row[5]
    )


def entry_values(entry: OutboxEntry) -> tuple[Any, ...]:
    return (entry.id, entry.upload_id, entry.type, entry.created_at, entry.body, entry.attempts)
