"""The one retry policy behind every request the client makes: what is worth another try, how
long to wait (exponential backoff with jitter, or the server's Retry-After), and how often.

A caller hands ``RetryPolicy.run`` one attempt, which raises :class:`Transient` when trying again
may help, and optionally what to do between attempts (the upload loop asks the server for the
true offset before it resends a PATCH; the direct path has the part URL signed afresh)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

from haul.client.errors import RetriesExhausted

T = TypeVar("T")

# Worth another try besides 5xx: a timeout, a conflict or lock that a fresh HEAD resolves (409,
# 423), too early or too many (425, 429), and bytes damaged in transit (460, tus checksums).
TRANSIENT_4XX = frozenset({408, 409, 423, 425, 429, 460})
# The 5xx that say the server never will: retrying cannot help.
PERMANENT_5XX = frozenset({501, 505})


def is_transient(status: int) -> bool:
    """Whether an answer with this status may succeed if the same request is sent again."""
    if 500 <= status < 600:
        return status not in PERMANENT_5XX
    return status in TRANSIENT_4XX


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date; None if absent or
    unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


class Transient(Exception):
    """One attempt failed in a way another attempt may not (network error, timeout, 5xx, ...)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


Between = Callable[[Transient], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 10  # in all, the first one included
    base_delay: float = 0.5
    max_delay: float = 15.0

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait after the ``failures``-th failure in a row: what the server asked
        for, else exponential backoff with jitter (so parallel streams do not retry in step);
        never more than ``max_delay``."""
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        backoff = min(self.max_delay, self.base_delay * 2 ** (failures - 1))
        return float(backoff * random.uniform(0.5, 1.0))

    async def run(
        self, attempt: Callable[[], Awaitable[T]], *, what: str, between: Between | None = None
    ) -> T:
        """``attempt()`` until it returns, waiting (then calling ``between``) after each
        Transient; RetriesExhausted, with the last reason, once ``attempts`` have failed. Any
        other exception ends it at once."""
        failures = 0
        while True:
            try:
                return await attempt()
            except Transient as exc:
                failures += 1
                if failures >= self.attempts:
                    times = "once" if failures == 1 else f"{failures} times"
                    raise RetriesExhausted(f"{what} failed {times}: {exc}") from exc
                await asyncio.sleep(self.delay(failures, exc.retry_after))
                if between is not None:
                    await between(exc)
