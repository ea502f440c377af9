"""HTTPS under uvicorn: each accepted connection is counted against its client's cap before a
byte is read, then TLS starts (with a deadline for the handshake), and ALPN picks the protocol:
haul's guarded HTTP/1.1 or HTTP/2 (haul.transport.http2).

TLS is started per connection rather than by the listening socket so that a client holding
connections open without finishing a handshake, or without sending a request after one,
counts against its cap like any other: the limits that protect plain HTTP protect HTTPS too.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

from haul.transport.guard import ClientSlots, guarded_protocol
from haul.transport.http2 import H2Protocol


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


def tls_protocol(
    context: ssl.SSLContext, header_timeout: float, max_per_client: int, http1_name: str = "lean"
) -> type[asyncio.Protocol]:
    slots = ClientSlots(max_per_client)
    http1 = guarded_protocol(header_timeout, 0, http1_name)  # counted here, once per connection

    class TlsGate(asyncio.Protocol):
        """Stays the TLS transport's protocol and hands every event to the chosen one."""

        def __init__(
            self,
            config: Any,
            server_state: Any,
            app_state: dict[str, Any],
            _loop: asyncio.AbstractEventLoop | None = None,
        ) -> None:
            self.arguments = (config, server_state, app_state)
            self.loop = _loop or asyncio.get_event_loop()
            self.inner: asyncio.Protocol | None = None
            self.host: str | None = None
            self.handshake: asyncio.Task[None] | None = None
            self.early: list[bytes] = []

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            peer = transport.get_extra_info("peername")
            host = str(peer[0]) if isinstance(peer, tuple) else None
            if host is not None:
                if not slots.take(host):
                    transport.abort()  # over the cap: refused before the handshake
                    return
                self.host = host
            # Until TLS starts, the client's hello must stay in the socket, not reach us
            # (asyncio's event loop honours this at once; uvloop's does not:
            # see haul.transport.server).
            transport.pause_reading()
            self.handshake = self.loop.create_task(self._start_tls(transport))

        async def _start_tls(self, transport: asyncio.Transport) -> None:
            try:
                secure = await self.loop.start_tls(
                    transport, self, context, server_side=True,
                    ssl_handshake_timeout=header_timeout or 60.0,
                )  # fmt: skip
            except (OSError, ssl.SSLError, TimeoutError, ConnectionError):
                transport.abort()
                self._give_back()
                return
            if secure is None:  # closed during the handshake
                self._give_back()
                return
            ssl_object = secure.get_extra_info("ssl_object")
            config, server_state, app_state = self.arguments
            inner: asyncio.Protocol
            if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
                inner = H2Protocol(config, server_state, app_state, self.loop, header_timeout)
            else:
                inner = http1(config, server_state, app_state, self.loop)
            self.inner = inner
            inner.connection_made(secure)
            for data in self.early:
                inner.data_received(data)
            self.early.clear()

        def data_received(self, data: bytes) -> None:
            if self.inner is not None:
                self.inner.data_received(data)
            else:  # the request can come with the handshake's last bytes, before we resume
                self.early.append(data)

        def eof_received(self) -> bool | None:
            return self.inner.eof_received() if self.inner is not None else None

        def pause_writing(self) -> None:
            if self.inner is not None:
                self.inner.pause_writing()

        def resume_writing(self) -> None:
            if self.inner is not None:
                self.inner.resume_writing()

        def connection_lost(self, exc: Exception | None) -> None:
            if self.handshake is not None and not self.handshake.done():
                self.handshake.cancel()
            if self.inner is not None:
                with contextlib.suppress(Exception):
                    self.inner.connection_lost(exc)
            self._give_back()

        def _give_back(self) -> None:
            if self.host is not None:
                slots.give_back(self.host)
                self.host = None

    return TlsGate
