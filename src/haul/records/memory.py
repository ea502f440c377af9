"""Upload records in a dict: for tests and throwaway servers. Same answers as the SQL stores
(the conformance suite runs all of them); nothing survives the process."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from haul.core.interfaces import OutboxEntry
from haul.core.models import ConcatKind, Upload, UploadState, Usage
from haul.errors import UploadExists

_LIVE = (UploadState.ACTIVE, UploadState.COMPLETE)


def _copy(upload: Upload) -> Upload:
    """Callers mutate the records they get: hand out copies, as a database would."""
    return dataclasses.replace(upload, offset=0)


class MemoryStore:
    def __init__(self) -> None:
        self._rows: dict[str, Upload] = {}
        # The hooks' outbox, in the order written: id -> (entry, next try, lease holder, until).
        self._outbox: dict[str, tuple[OutboxEntry, float, str, float]] = {}
        self._progress: dict[str, float] = {}  # upload id -> last progress event

    async def open(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to release; the records stay for a reopen in the same process."""

    async def insert(self, upload: Upload) -> None:
        if upload.id in self._rows:
            raise UploadExists(upload.id)
        self._rows[upload.id] = _copy(upload)

    async def get(self, upload_id: str) -> Upload | None:
        row = self._rows.get(upload_id)
        return _copy(row) if row else None

    async def get_many(self, upload_ids: Sequence[str]) -> dict[str, Upload]:
        return {i: _copy(self._rows[i]) for i in upload_ids if i in self._rows}

    async def save(self, upload: Upload) -> None:
        if upload.id in self._rows:  # like UPDATE ... WHERE id: a deleted record stays deleted
            kept = self._rows[upload.id]
            self._rows[upload.id] = dataclasses.replace(
                _copy(upload),
                created_at=kept.created_at,
                parts=kept.parts,
                concat=kept.concat,
                owner=kept.owner,
                storage_key=kept.storage_key,
                request_digest=kept.request_digest,
            )

    async def delete(self, upload_id: str) -> None:
        self._rows.pop(upload_id, None)

    def _select(self, keep: Callable[[Upload], bool], limit: int | None = None) -> list[Upload]:
        found = [_copy(u) for u in self._rows.values() if keep(u)]
        return found if limit is None else found[:limit]

    async def expired(self, now: float, limit: int) -> list[Upload]:
        return self._select(
            lambda u: u.state in _LIVE and u.expires_at is not None and u.expires_at < now, limit
        )

    async def tombstones(self, before: float, limit: int) -> list[Upload]:
        return self._select(lambda u: u.state.gone and u.updated_at < before, limit)

    async def finals_waiting_for(self, part_id: str) -> list[Upload]:
        return self._select(lambda u: u.state is UploadState.ACTIVE and part_id in u.parts)

    async def finals_listing(self, part_id: str) -> list[Upload]:
        return self._select(lambda u: part_id in u.parts)

    async def find_complete(self, sha256: str, length: int, owner: str | None) -> Upload | None:
        found = self._select(
            lambda u: (
                u.complete
                and u.sha256 == sha256
                and u.length == length
                and (owner is None or u.owner == owner)
            ),
            1,
        )
        return found[0] if found else None

    async def verify_claim(self, now: float, lease: float, limit: int) -> list[Upload]:
        due = sorted(
            (u for u in self._rows.values()
             if u.complete and u.verify_at is not None and u.verify_at <= now),
            key=lambda u: u.verify_at or 0.0,
        )[:limit]  # fmt: skip
        for upload in due:
            upload.verify_at = now + lease
        return [_copy(u) for u in due]

    async def verify_hold(self, upload_id: str, until: float) -> None:
        row = self._rows.get(upload_id)
        if row is not None and row.verify_at is not None:
            row.verify_at = until

    async def find_file(self, sha256: str, owner: str) -> Upload | None:
        found = self._select(
            lambda u: (
                u.complete
                and u.sha256 == sha256
                and u.owner == owner
                and u.concat is not ConcatKind.PARTIAL
            ),
            1,
        )
        return found[0] if found else None

    async def usage(self, owner: str, now: float) -> Usage:
        mine = [u for u in self._rows.values() if u.owner == owner]
        files = [u for u in mine if u.concat is not ConcatKind.PARTIAL]
        held = sum(
            u.length or 0 for u in mine if u.state in _LIVE and u.concat is not ConcatKind.FINAL
        )
        recent = [u.created_at for u in files if u.created_at > now - 3600]
        active = sum(1 for u in files if u.state is UploadState.ACTIVE)
        return Usage(held, active, len(recent), min(recent, default=None))

    async def count_active(self) -> int:
        return sum(1 for u in self._rows.values() if u.state is UploadState.ACTIVE)

    async def listing(
        self,
        owner: str,
        *,
        states: Sequence[UploadState],
        since: float | None = None,
        after: tuple[float, str] | None = None,
        limit: int = 100,
    ) -> list[Upload]:
        found = sorted(
            (
                u
                for u in self._rows.values()
                if u.owner == owner
                and u.state in states
                and u.concat is not ConcatKind.PARTIAL
                and (since is None or u.created_at >= since)
                and (after is None or (u.created_at, u.id) > after)
            ),
            key=lambda u: (u.created_at, u.id),
        )
        return [_copy(u) for u in found[:limit]]

    async def progress_due(self, upload_id: str, at: float, interval: float) -> bool:
        last = self._progress.get(upload_id)
        if last is not None and at - last < interval:
            return False
        self._progress[upload_id] = at
        return True

    async def progress_forget(self, upload_id: str) -> None:
        self._progress.pop(upload_id, None)

    async def outbox_add(self, entry: OutboxEntry) -> None:
        self._outbox.setdefault(entry.id, (entry, 0.0, "", 0.0))

    async def outbox_claim(
        self, worker: str, now: float, lease: float, limit: int
    ) -> list[OutboxEntry]:
        claimed: list[OutboxEntry] = []
        seen: set[str] = set()  # uploads whose oldest entry came before
        for entry, next_at, _holder, until in list(self._outbox.values()):
            first = entry.upload_id not in seen
            seen.add(entry.upload_id)
            if first and next_at <= now and until <= now and len(claimed) < limit:
                self._outbox[entry.id] = (entry, next_at, worker, now + lease)
                claimed.append(entry)
        return claimed

    async def outbox_done(self, entry_ids: Sequence[str]) -> None:
        for entry_id in entry_ids:
            self._outbox.pop(entry_id, None)

    async def outbox_retry(self, entry_id: str, worker: str, next_at: float) -> None:
        kept = self._outbox.get(entry_id)
        if kept is not None and kept[2] == worker:
            entry = dataclasses.replace(kept[0], attempts=kept[0].attempts + 1)
            self._outbox[entry_id] = (entry, next_at, "", 0.0)

    async def outbox_pending(self) -> int:
        return len(self._outbox)
