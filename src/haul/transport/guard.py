"""Connection limits that only the HTTP server can enforce, added to uvicorn's protocol:
a deadline for each request's headers (slowloris), and a cap on connections per client IP."""

from __future__ import annotations

import asyncio
from collections import Counter

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from haul.transport.http1 import LeanHttpToolsProtocol


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


def guarded_protocol(header_timeout: float, max_per_client: int) -> type[HttpToolsProtocol]:
    slots = ClientSlots(max_per_client)  # shared by the connections of one server

    class GuardedHttpToolsProtocol(LeanHttpToolsProtocol):
        _header_deadline: asyncio.TimerHandle | None = None
        _counted: str | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            host = self.client[0] if self.client else None
            if host is not None and max_per_client:
                if not slots.take(host):
                    transport.abort()  # refused before a byte is read: costs nothing more
                    return
                self._counted = host
            self._await_headers()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._await_headers()

        def on_headers_complete(self) -> None:
            self._stop_waiting()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_waiting()
            if self._counted is not None:
                slots.give_back(self._counted)
                self._counted = None
            super().connection_lost(exc)

        def _await_headers(self) -> None:
            if header_timeout and self._header_deadline is None:
                self._header_deadline = self.loop.call_later(header_timeout, self._too_slow)

        def _stop_waiting(self) -> None:
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None

        def _too_slow(self) -> None:
            self._header_deadline = None
            if not self.transport.is_closing():
                self.transport.close()

    return GuardedHttpToolsProtocol
