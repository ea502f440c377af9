"""Delivers the outbox: claims due entries under a lease (so one worker in the whole cluster
holds an entry at a time), sends each with its stored id and body, removes it once the
application took it, and otherwise tries again later, backing off exponentially with jitter,
until it is older than the maximum age and is dropped (logged and counted)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Callable

from haul.core.interfaces import Outbox, OutboxEntry
from haul.hooks.transports import Transport

log = logging.getLogger("haul.hooks")

Observe = Callable[[str, str], None]  # (event type, outcome)


def _ignore(kind: str, outcome: str) -> None:
    return None


def backoff(attempts: int, base: float, cap: float) -> float:
    """Seconds before the next try: doubling per failure up to ``cap``, each drawn at random
    from its upper half, so a receiver that comes back is not hit by every retry at once."""
    ceiling = min(cap, base * 2 ** min(attempts, 32))
    return random.uniform(ceiling / 2, ceiling)


class Deliverer:
    def __init__(
        self,
        outbox: Outbox,
        transport: Transport,
        *,
        max_age: float,
        timeout: float,
        observe: Observe = _ignore,
        batch: int | None = None,
        poll: float = 1.0,
        gather: float = 0.02,
        retry_base: float = 0.5,
        retry_cap: float = 300.0,
    ) -> None:
        self.outbox = outbox
        self.transport = transport
        self.max_age = max_age
        self.observe = observe
        # A batch the transport sends at once: every claimed entry is on its way at once, so
        # none waits out its lease in a queue.
        self.batch = batch or transport.concurrency
        self.poll = poll  # how often to look for other nodes' events and due retries
        self.gather = gather
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        # Longer than any delivery can take (a wait for the transport's turn, shared with the
        # blocking hooks, then the call), so a live worker never loses its lease.
        self.lease = 2 * timeout + 30.0
        self.name = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._wake = asyncio.Event()

    def nudge(self) -> None:
        """An entry was written here: look now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled."""
        while True:
            try:
                claimed = await self.round()
            except Exception:
                log.exception("hook delivery failed; retrying in %s s", self.poll)
                claimed = 0
            if claimed < self.batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll)
                self._wake.clear()
                await asyncio.sleep(self.gather)  # let a burst of events make one batch

    async def round(self) -> int:
        """Claim one batch and deliver it (concurrently: each entry is another upload's
        oldest); returns how many were claimed."""
        now = time.time()
        entries = await self.outbox.outbox_claim(self.name, now, self.lease, self.batch)
        settled = await asyncio.gather(*(self._deliver(entry, now) for entry in entries))
        done = [entry.id for entry, over in zip(entries, settled, strict=True) if over]
        if done:  # a crash before this line only repeats them: at least once
            await self.outbox.outbox_done(done)
        return len(entries)

    async def _deliver(self, entry: OutboxEntry, now: float) -> bool:
        """Whether the entry is settled: delivered, or dropped as too old."""
        if now - entry.created_at > self.max_age:
            log.error(
                "hook event %s (%s of upload %s) dropped: not delivered in %s s (%d attempts)",
                entry.id, entry.type, entry.upload_id, self.max_age, entry.attempts,
            )  # fmt: skip
            self.observe(entry.type, "dropped")
            return True
        answer = await self.transport.send(entry.id, entry.body.encode())
        if answer.ok:
            self.observe(entry.type, "delivered")
            return True
        delay = backoff(entry.attempts, self.retry_base, self.retry_cap)
        log.warning(
            "hook event %s (%s of upload %s) not delivered (%s); retrying in %.1f s",
            entry.id, entry.type, entry.upload_id, answer.detail, delay,
        )  # fmt: skip
        self.observe(entry.type, "failed")
        await self.outbox.outbox_retry(entry.id, self.name, time.time() + delay)
        return False
