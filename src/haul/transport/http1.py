"""uvicorn's HTTP/1.1 protocol with a lean request-body path.

Stock uvicorn copies every body byte several times in Python on its way to the application:
the event loop's read into a new bytes object, the parser's slice of it, an append to a
bytearray, and bytes() of that for the ASGI message. Here the socket is read straight into one
reusable buffer per event loop (asyncio's BufferedProtocol), in larger reads, and each piece
the parser cuts out is handed to the application as it is (joined only when several are
waiting): the parser's copy is the only one left. Measured on one 2 GiB upload with digests
off: ~990 MB/s before, ~1500 MB/s after.

It leans on uvicorn's private internals, so it is used only on the uvicorn releases it was
tested with (TESTED_UVICORN; tests/test_transport_fence.py pins each internal it needs); on any
other release haul serves HTTP/1.1 with uvicorn's own protocol and says so in the log.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

if TYPE_CHECKING:
    from uvicorn._types import ASGIReceiveEvent, HTTPRequestEvent

# uvicorn releases the lean protocol was tested with; constraints.txt pins one of them.
TESTED_UVICORN = ("0.54.0",)
HTTP1_CHOICES = ("lean", "uvicorn")

READ_SIZE = 1 << 20
# Reading pauses once this much body waits for the application (uvicorn's 64 KiB would pause
# after every read, costing a tenth of the throughput); one more read may land on top, so a
# connection holds at most 3 MiB of body the application has not taken.
HIGH_WATER = 2 << 20

# The scope extension through which the application sends 1xx responses before its final one
# (ASGI has no message for them): {"send": async (status, headers) -> None}.
INFORMATIONAL = "http.response.informational"
InformationalSend = Callable[[int, Sequence[tuple[bytes, bytes]]], Awaitable[None]]
# The scope extension through which the application learns that the client went away before
# its answer, even while it reads no body: {"gone": bool, "callbacks": [callable, ...]}, each
# callback called once (ASGI only says so to a receive() call).
CLIENT_GONE = "haul.client_gone"

# The parser copies out everything it keeps before a read returns, so all connections of one
# event loop can share one buffer (reads on a loop never overlap).
_buffers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, memoryview] = (
    weakref.WeakKeyDictionary()
)


class _PieceCycle(RequestResponseCycle):
    """A request whose body waits as a list of pieces instead of one growing bytearray."""

    pieces: list[bytes]
    buffered: int

    async def receive(self) -> ASGIReceiveEvent:
        # The same steps as uvicorn's receive(), but for how the body is handed over.
        if self.waiting_for_100_continue and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.waiting_for_100_continue = False
        if not self.disconnected and not self.response_complete:
            self.flow.resume_reading()
            await self.message_event.wait()
            self.message_event.clear()
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        pieces = self.pieces
        body = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        self.pieces, self.buffered = [], 0
        message: HTTPRequestEvent = {
            "type": "http.request",
            "body": body,
            "more_body": self.more_body,
        }
        return message


class LeanHttpToolsProtocol(HttpToolsProtocol, asyncio.BufferedProtocol):
    def get_buffer(self, sizehint: int) -> memoryview:
        buffer = _buffers.get(self.loop)
        if buffer is None:
            buffer = _buffers[self.loop] = memoryview(bytearray(READ_SIZE))
        return buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(_buffers[self.loop][:nbytes])  # type: ignore[arg-type]

    def on_headers_complete(self) -> None:
        previous = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not previous and cycle is not None:
            # uvicorn builds the cycle itself; it only gains a receive() and two fields here,
            # before its task first runs.
            cycle.__class__ = _PieceCycle
            cycle.pieces, cycle.buffered = [], 0  # type: ignore[attr-defined]
            extensions = cycle.scope.setdefault("extensions", {})
            extensions[INFORMATIONAL] = {"send": _informational(cycle)}

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if not isinstance(cycle, _PieceCycle) or cycle.response_complete:
            return
        cycle.pieces.append(body)
        cycle.buffered += len(body)
        if cycle.buffered >= HIGH_WATER:
            self.flow.pause_reading()
        cycle.message_event.set()


def client_gone(gone: dict[str, Any]) -> None:
    """Tell the application (see CLIENT_GONE) that its client went away, once."""
    if not gone["gone"]:
        gone["gone"] = True
        for callback in gone["callbacks"]:
            callback()


def _informational(cycle: RequestResponseCycle) -> InformationalSend:
    async def send(status: int, headers: Sequence[tuple[bytes, bytes]]) -> None:
        # Only before the final response starts, and never a 101 (that would switch protocols).
        if not 102 <= status <= 199 or cycle.response_started or cycle.transport.is_closing():
            return
        reason = "Upload Resumption Supported" if status == 104 else "Informational"
        lines = [f"HTTP/1.1 {status} {reason}\r\n".encode()]
        for name, value in headers:
            if b"\r" in name + value or b"\n" in name + value:
                raise ValueError("an informational header holds a line break")
            lines.append(b"%s: %s\r\n" % (name, value))
        cycle.transport.write(b"".join([*lines, b"\r\n"]))

    return send


def http1_protocol(choice: str) -> type[HttpToolsProtocol]:
    """The HTTP/1.1 protocol by name: ``lean`` (the one above) on a tested uvicorn, else
    uvicorn's own with a warning; ``uvicorn`` (its httptools protocol, as it comes)."""
    if choice not in HTTP1_CHOICES:
        raise ValueError(f"no HTTP/1.1 protocol named {choice!r}")
    if choice == "uvicorn":
        return HttpToolsProtocol
    if uvicorn.__version__ not in TESTED_UVICORN:
        logging.getLogger("haul.transport").warning(
            "uvicorn %s is not a release the lean HTTP/1.1 protocol was tested with (%s): "
            "serving HTTP/1.1 with uvicorn's own protocol instead (slower request bodies)",
            uvicorn.__version__,
            ", ".join(TESTED_UVICORN),
        )
        return HttpToolsProtocol
    return LeanHttpToolsProtocol
