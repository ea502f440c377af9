"""Connection limits that only the HTTP server can enforce, added to uvicorn's protocol:
a deadline for each request's headers (slowloris), and a cap on connections per client IP.
They hold whichever HTTP/1.1 protocol serves: haul's lean one or uvicorn's own. Also the news
that a client went away, which uvicorn only hands to an application reading the body."""

from __future__ import annotations

import asyncio
import select
from collections import Counter
from typing import Any, ClassVar, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from haul.transport.http1 import CLIENT_GONE, client_gone, http1_protocol


class ClientSlots:
    """Open connections per client address, at most ``cap`` each (0 = no cap)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.open: Counter[str] = Counter()

    def take(self, host: str) -> bool:
        if self.cap and self.open[host] >= self.cap:
            return False
        self.open[host] += 1
        return True

    def give_back(self, host: str) -> None:
        self.open[host] -= 1
        if self.open[host] <= 0:
            del self.open[host]


# How often a connection whose reading is paused is checked for a client that hung up, and
# what counts as hung up: a close (FIN) or a reset (POLLRDHUP is Linux's; elsewhere, none).
WATCH_EVERY = 1.0
_HANGUP = getattr(select, "POLLRDHUP", 0) and (select.POLLRDHUP | select.POLLHUP | select.POLLERR)


class _Guard(HttpToolsProtocol):
    """The limits, put in front of whichever HTTP/1.1 protocol serves (see guarded_protocol)."""

    slots: ClassVar[ClientSlots]  # shared by the connections of one server
    header_timeout: ClassVar[float]
    _header_deadline: asyncio.TimerHandle | None = None
    _counted: str | None = None
    _unanswered: list[tuple[Any, dict[str, Any]]] | None = None  # (cycle, CLIENT_GONE)
    _watch: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        host = self.client[0] if self.client else None
        if host is not None and self.slots.cap:
            if not self.slots.take(host):
                transport.abort()  # refused before a byte is read: costs nothing more
                return
            self._counted = host
        self._await_headers()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._await_headers()

    def on_headers_complete(self) -> None:
        self._stop_waiting()
        previous = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not previous and cycle is not None:  # before its task first runs
            gone: dict[str, Any] = {"gone": False, "callbacks": []}
            extensions = cast("dict[str, object]", cycle.scope.setdefault("extensions", {}))
            extensions[CLIENT_GONE] = gone
            unanswered = self._unanswered = [
                (c, g) for c, g in self._unanswered or () if not c.response_complete
            ]
            unanswered.append((cycle, gone))
            if self._watch is None and _HANGUP:
                self._watch = self.loop.call_later(WATCH_EVERY, self._look_for_hangup)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        if self._counted is not None:
            self.slots.give_back(self._counted)
            self._counted = None
        super().connection_lost(exc)
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        unanswered, self._unanswered = self._unanswered or [], None
        for cycle, gone in unanswered:
            if not cycle.response_complete:
                client_gone(gone)

    def _look_for_hangup(self) -> None:
        """While reading is paused (the application is behind, often waiting on a store that
        hangs), a client's close would go unseen until reading resumes: the socket is polled
        instead, and once the client has hung up, reading resumes so that what it sent is
        taken and its end is seen as uvicorn sees any end (a lost connection)."""
        self._watch = None
        if not any(not cycle.response_complete for cycle, _ in self._unanswered or ()):
            return
        transport = self.transport
        sock = transport.get_extra_info("socket")
        if not transport.is_reading() and sock is not None and not transport.is_closing():
            poll = select.poll()
            poll.register(sock.fileno(), _HANGUP)
            if poll.poll(0):
                transport.resume_reading()
        self._watch = self.loop.call_later(WATCH_EVERY, self._look_for_hangup)

    def _await_headers(self) -> None:
        if self.header_timeout and self._header_deadline is None:
            self._header_deadline = self.loop.call_later(self.header_timeout, self._too_slow)

    def _stop_waiting(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _too_slow(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def guarded_protocol(
    header_timeout: float, max_per_client: int, http1: str = "lean"
) -> type[HttpToolsProtocol]:
    """The HTTP/1.1 protocol named ``http1`` (see haul.transport.http1), guarded."""
    base = http1_protocol(http1)
    limits = {"slots": ClientSlots(max_per_client), "header_timeout": header_timeout}
    return cast("type[HttpToolsProtocol]", type("GuardedHttpToolsProtocol", (_Guard, base), limits))
