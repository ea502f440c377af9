"""What happens to uploads, told to whoever listens: one typed event per lifecycle step,
published through one seam (:class:`Events`). Hooks, metrics and logs subscribe here; the core
never knows who listens.

Subscribers are awaited in order, before the request that caused the event is answered, so a
subscriber that records events durably (an outbox) can do it inside that request. A subscriber
whose failure must not fail the request catches its own errors.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from haul.core.models import Upload


@dataclass(frozen=True)
class Event:
    upload: Upload  # a snapshot, as it was when the event happened
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Created(Event):
    """A new upload (single, partial or final) exists and accepts bytes."""


@dataclass(frozen=True)
class Progress(Event):
    """A request's bytes were stored; ``upload.offset`` is the new offset."""

    received: int = 0  # bytes this request stored


@dataclass(frozen=True)
class Finished(Event):
    """Every byte is stored and verified: the upload is complete. One whose SHA-256 was
    verified in the background (core/verifier.py) is told once it was: it was complete, and
    served, from its completion on."""

    instant: bool = False  # completed from content the server already held: no byte sent


@dataclass(frozen=True)
class Terminated(Event):
    """Its client deleted it."""


@dataclass(frozen=True)
class Expired(Event):
    """It was removed by the collector: not finished in time, or a complete partial upload
    that no final upload took in time."""


@dataclass(frozen=True)
class Rejected(Event):
    """Refused and discarded: a digest mismatch, the content policy, the scanner, a limit."""

    reason: str = ""  # one of REJECTIONS
    detail: str = ""  # in words, for logs


REJECTIONS = ("digest", "type", "scan", "size")


Subscriber = Callable[[Event], Awaitable[None]]


class Events:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Hear every event from now on; returns the call that stops it."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    async def publish(self, event: Event) -> None:
        for subscriber in list(self._subscribers):
            await subscriber(event)


def snapshot(upload: Upload) -> Upload:
    """A copy that later changes to the record cannot reach."""
    return dataclasses.replace(upload)
