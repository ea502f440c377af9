"""The post-* events written to the outbox in the record store, inside the request that caused
them and before its answer: once the client has heard of a step, its event is durable. A write
that fails fails the request (the client retries) rather than losing the event quietly."""

from __future__ import annotations

from collections.abc import Callable

from haul.core import events
from haul.core.gate import current_request
from haul.core.interfaces import Outbox, OutboxEntry
from haul.core.models import Upload
from haul.hooks.body import POST_TYPES, event_body, new_event_id

_ENDS = (events.Finished, events.Terminated, events.Expired)
_TRACKED_MAX = 100_000  # uploads whose last progress event is remembered, before pruning


def _nothing() -> None:
    return None


class OutboxWriter:
    """An events subscriber. ``base_url`` (a setting) names where uploads live; without it the
    request that caused the event says (as its Location would), else the path alone."""

    def __init__(
        self,
        outbox: Outbox,
        *,
        types: frozenset[str],
        progress_interval: float,
        base_url: str,
        base_path: str,
        written: Callable[[], None] = _nothing,
    ) -> None:
        self.outbox = outbox
        self.types = types
        self.progress_interval = progress_interval
        self.base_url = base_url
        self.base_path = base_path
        self.written = written
        self._last_progress: dict[str, float] = {}

    async def hear(self, event: events.Event) -> None:
        kind = POST_TYPES.get(type(event))
        upload = event.upload
        if isinstance(event, _ENDS):
            self._last_progress.pop(upload.id, None)
            if "post-receive" in self.types:  # any node may have taken its last one
                await self.outbox.progress_forget(upload.id)
        if kind is None or kind not in self.types:
            return
        if isinstance(event, events.Progress) and not await self._progress_due(upload, event.at):
            return
        event_id = new_event_id()
        body = event_body(event_id, kind, event.at, upload, self._base())
        entry = OutboxEntry(event_id, upload.id, kind, event.at, body.decode())
        await self.outbox.outbox_add(entry)
        self.written()

    def _base(self) -> str:
        if self.base_url:
            return self.base_url
        request = current_request.get()
        return request.base_url if request is not None and request.base_url else self.base_path

    async def _progress_due(self, upload: Upload, at: float) -> bool:
        """At most one post-receive per upload per interval: this process's view first (no
        query for most requests), then the record store's, which every node shares."""
        upload_id = upload.id
        last = self._last_progress.get(upload_id)
        if last is not None and at - last < self.progress_interval:
            return False
        if not await self.outbox.progress_due(upload_id, at, self.progress_interval):
            self._last_progress[upload_id] = at  # another node took this interval
            return False
        if len(self._last_progress) >= _TRACKED_MAX:
            horizon = at - self.progress_interval
            self._last_progress = {k: v for k, v in self._last_progress.items() if v > horizon}
        self._last_progress[upload_id] = at
        return True
