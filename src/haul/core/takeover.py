"""A newer request on an upload takes over from one still writing to it, in this process.

A client that gave up on a request tries again at once; the request it left may be unable to
notice (a client's close stays unseen while reading is paused behind a store that hangs) and
holds the upload's lock until the store answers, so the retry would be refused with 423 for as
long. As in tusd, the retry asks the writer to stop: it is cancelled where it waits, drops
what it had not saved (the client sends it again from the offset the store holds) and lets go
of the lock; if its client is still there, it hears 423 ERR_UPLOAD_TAKEN_OVER. Only a request
of the same owner stops a writer (another owner's is refused with 404 and stops nothing), and
only a writer waiting on the storage before its commit: one waiting for its own client's bytes
is alive (and has the body timeout), and once the bytes are being committed, the request runs
to its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from haul.errors import TakenOver

log = logging.getLogger("haul")


# Seconds one wait on the storage must last before the writer counts as stuck (a store in
# time answers in milliseconds): a newer request arriving sooner stops it only if it is still
# in that same wait by then, so a writer busy with a healthy store is never stopped.
STUCK_AFTER = 1.0


class _Writer:
    def __init__(self, takeovers: Takeovers, upload_id: str, owner: str) -> None:
        self.takeovers = takeovers
        self.upload_id = upload_id
        self.owner = owner
        self.task = asyncio.current_task()
        self.loop = asyncio.get_running_loop()
        self.stopped = False
        self.ended = False
        self.since: float | None = self.loop.time()  # waiting on the storage since
        self.wait = 0  # which wait on the storage this is

    def waiting_on_storage(self, waiting: bool) -> None:
        self.since = self.loop.time() if waiting else None
        self.wait += 1

    def stop_when_stuck(self) -> None:
        if self.since is None or self.stopped or self.ended or self.task is None:
            return
        left = self.since + STUCK_AFTER - self.loop.time()
        if left > 0:
            self.loop.call_later(left, self._stop_if_still, self.wait)
            return
        self.stopped = True
        self.task.cancel()
        log.info("upload %s: a newer request takes over from the one writing", self.upload_id)

    def _stop_if_still(self, wait: int) -> None:
        if wait == self.wait:
            self.stop_when_stuck()

    def end(self) -> None:
        """The body phase is over: no newer request stops this one any more."""
        self.ended = True
        if self.takeovers._writing.get(self.upload_id) is self:
            del self.takeovers._writing[self.upload_id]


class Takeovers:
    def __init__(self) -> None:
        self._writing: dict[str, _Writer] = {}

    def ask_to_stop(self, upload_id: str, owner: str) -> None:
        """Stop the request of ``owner`` writing to ``upload_id`` in this process, if there is
        one and it is stuck on the storage (now, or once its current wait has lasted
        STUCK_AFTER)."""
        writer = self._writing.get(upload_id)
        if writer is not None and writer.owner == owner:
            writer.stop_when_stuck()

    @contextlib.asynccontextmanager
    async def writing(self, upload_id: str, owner: str) -> AsyncIterator[_Writer]:
        """The body phase of a request of ``owner`` on ``upload_id``, until ``end()``: a
        newer request of the same owner may stop it while it waits on the storage."""
        me = self._writing[upload_id] = _Writer(self, upload_id, owner)
        try:
            yield me
        except asyncio.CancelledError:
            if not me.stopped or me.task is None:
                raise
            me.task.uncancel()
            raise TakenOver(
                "a newer request on this upload took over; resume from its offset"
            ) from None
        finally:
            me.end()
