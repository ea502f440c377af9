"""Collecting garbage: unfinished uploads past their expiry, tombstones past their time, and
stored bytes that no record references (left by a crash between two steps)."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field

from haul.core import events
from haul.core.lifecycle import Lifecycle
from haul.core.models import UploadState
from haul.errors import HaulError

log = logging.getLogger("haul")


@dataclass
class GcReport:
    expired: int = 0
    purged_tombstones: int = 0
    orphans: int = 0
    ids: list[str] = field(default_factory=list)


class Collector:
    def __init__(self, life: Lifecycle) -> None:
        self.life = life

    async def collect(self, *, now: float | None = None, batch: int = 500) -> GcReport:
        """Expire unfinished uploads, purge old tombstones, remove bytes nobody references."""
        life = self.life
        moment = time.time() if now is None else now
        report = GcReport()
        for upload in await life.store.expired(moment, batch):
            if upload.complete and await life.store.finals_waiting_for(upload.id):
                continue  # a final upload is about to take it
            with contextlib.suppress(HaulError):
                retired = await life.retire(upload.id, UploadState.EXPIRED)
                report.expired += 1
                report.ids.append(upload.id)
                if retired is not None:
                    await life.tell(events.Expired, retired)
        for tomb in await life.store.tombstones(moment - life.limits.tombstone_ttl, batch):
            with contextlib.suppress(HaulError):
                async with life.lock(tomb.id):
                    await life.storage.delete(tomb.stored_as)
                    await life.store.delete(tomb.id)
                await life.locker.forget(tomb.id)
                report.purged_tombstones += 1
        async for name, changed in life.storage.stored_ids():
            if changed > moment - life.limits.orphan_grace:
                continue
            upload_id = name.rpartition("/")[2]  # below its storage key, if it has one
            record = await life.store.get(upload_id)
            if record is None or record.state.gone or record.stored_as != name:
                with contextlib.suppress(HaulError):
                    async with life.lock(upload_id):
                        await life.storage.delete(name)
                    report.orphans += 1
        if report.expired or report.purged_tombstones or report.orphans:
            log.info(
                "gc: %d expired, %d tombstones purged, %d orphans removed",
                report.expired,
                report.purged_tombstones,
                report.orphans,
            )
        return report
