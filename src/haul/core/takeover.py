"""A newer request on an upload takes over from one still writing to it, in this process.

A client that gave up on a request tries again at once; the request it left may be unable to
notice (a client's close stays unseen while reading is paused behind a store that hangs) and
holds the upload's lock until the store answers, so the retry would be refused with 423 for as
long. As in tusd, the retry asks the writer to stop: it is cancelled where it waits, drops
what it had not saved (the client sends it again from the offset the store holds) and lets go
of the lock; if its client is still there, it hears 423 ERR_UPLOAD_TAKEN_OVER. Only a writer
waiting on the storage before its commit can be stopped: one waiting for its own client's
bytes is alive (and has the body timeout), and once the bytes are being committed, the
request runs to its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from haul.errors import TakenOver

log = logging.getLogger("haul")


class _Writer:
    def __init__(self, takeovers: Takeovers, upload_id: str) -> None:
        self.takeovers = takeovers
        self.upload_id = upload_id
        self.task = asyncio.current_task()
        self.stopped = False
        self.on_storage = True  # waiting on the storage (not on its client's bytes)

    def waiting_on_storage(self, waiting: bool) -> None:
        self.on_storage = waiting

    def end(self) -> None:
        """The body phase is over: no newer request stops this one any more."""
        if self.takeovers._writing.get(self.upload_id) is self:
            del self.takeovers._writing[self.upload_id]


class Takeovers:
    def __init__(self) -> None:
        self._writing: dict[str, _Writer] = {}

    def ask_to_stop(self, upload_id: str) -> None:
        """Stop the request writing to ``upload_id`` in this process, if there is one."""
        writer = self._writing.get(upload_id)
        if writer is None or writer.task is None or writer.stopped:
            return
        if writer.on_storage:
            writer.stopped = True
            writer.task.cancel()
            log.info("upload %s: a newer request takes over from the one writing", upload_id)

    @contextlib.asynccontextmanager
    async def writing(self, upload_id: str) -> AsyncIterator[_Writer]:
        """The body phase of a request on ``upload_id``, until ``end()``: a newer request
        may stop it while it waits on the storage."""
        me = self._writing[upload_id] = _Writer(self, upload_id)
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
