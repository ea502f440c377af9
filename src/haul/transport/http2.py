"""HTTP/2 for the ASGI application, on the `h2` state machine, for TLS connections that chose
h2 by ALPN (see haul.transport.tls). Plugged into uvicorn beside its HTTP/1.1 protocol, so the
server, lifespan and shutdown stay uvicorn's.

Flow control is what keeps memory bounded: a stream's window is given back only as the
application takes its body, so a slow disk slows the client instead of filling memory.

A connection holds at most MAX_STREAMS streams at once; those beyond are refused one by one
(RST_STREAM REFUSED_STREAM, RFC 9113 5.1.2). A client that wastes streams, resetting them
before their answer or opening them beyond the cap ("rapid reset", CVE-2023-44487), more than
WASTE_ALLOWANCE times beyond the requests it had answered gets GOAWAY ENHANCE_YOUR_CALM and
the connection closes. A reset stream costs little: the application is not called at all when
the reset comes with the request's headers, and is cancelled when it has not started on the
body yet; one that is reading the body learns of the reset at its next read and keeps what
arrived (as over HTTP/1.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import H2Error
from h2.settings import SettingCodes, Settings

from haul.transport.http1 import CLIENT_GONE, INFORMATIONAL, client_gone

log = logging.getLogger("uvicorn.error")

STREAM_WINDOW = 8 << 20  # body bytes one request may have in flight
CONNECTION_WINDOW = 16 << 20  # and all requests of a connection together
MAX_FRAME = 1 << 20  # larger frames: fewer of them per gigabyte
MAX_STREAMS = 100  # advertised as SETTINGS_MAX_CONCURRENT_STREAMS
# h2 would enforce the limit itself by ending the whole connection; it enforces only this far
# higher one (a flood of headers in one read), and haul refuses the streams beyond MAX_STREAMS.
H2_HARD_LIMIT = 10 * MAX_STREAMS
WASTE_ALLOWANCE = 100  # streams reset or refused beyond those answered, before GOAWAY
LINGER = 2.0  # seconds a calmed connection is still read (and dropped) so the GOAWAY arrives
# Connection-specific headers are forbidden in HTTP/2 (RFC 9113 8.2.2).
_HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}


class _Stream:
    """One request: its body as it arrives, and its answer's progress."""

    def __init__(self) -> None:
        self.body: deque[tuple[bytes, int]] = deque()  # (data, flow-controlled length)
        self.ended = False  # the client sent the whole body
        self.body_taken = False  # and the application took all of it
        self.gone = False  # reset by the client, or the connection closed
        self.arrived = asyncio.Event()
        self.window = asyncio.Event()  # the peer opened its window: more may be sent
        self.headers_sent = False
        self.finished = False  # the answer was sent whole
        self.task: asyncio.Task[None] | None = None  # the application's, once started
        self.reading = False  # the application asked for the body
        self.news: dict[str, Any] = {"gone": False, "callbacks": []}  # CLIENT_GONE


class H2Protocol(asyncio.Protocol):
    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        header_timeout: float = 0.0,
    ) -> None:
        self.config = config
        self.app = config.loaded_app
        self.connections = server_state.connections
        self.app_state = app_state
        self.loop = _loop or asyncio.get_event_loop()
        self.header_timeout = header_timeout
        self.conn = H2Connection(H2Configuration(client_side=False, header_encoding=None))
        self.streams: dict[int, _Stream] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.fresh: list[tuple[int, _Stream, dict[str, Any]]] = []  # admitted in this read
        self.wasted = 0  # streams reset by the client before their answer, or refused
        self.answered = 0  # streams whose answer was sent whole
        self.calmed = False  # told ENHANCE_YOUR_CALM: what still comes is dropped
        self.writable = asyncio.Event()
        self.writable.set()
        self.closing = False
        self._idle: asyncio.TimerHandle | None = None

    # -- transport events -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.connections.add(self)
        self.server = _address(transport.get_extra_info("sockname"))
        self.client = _address(transport.get_extra_info("peername"))
        _settle(self.conn.local_settings, SettingCodes.MAX_CONCURRENT_STREAMS, MAX_STREAMS)
        self.conn.initiate_connection()  # its SETTINGS tell the client MAX_STREAMS
        _settle(self.conn.local_settings, SettingCodes.MAX_CONCURRENT_STREAMS, H2_HARD_LIMIT)
        self.conn.update_settings({
            SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            SettingCodes.MAX_FRAME_SIZE: MAX_FRAME,
        })  # fmt: skip
        self.conn.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self._flush()
        # The first request must come as soon as a header would (slowloris).
        self._wait_idle(self.header_timeout or self.config.timeout_keep_alive)

    def data_received(self, data: bytes) -> None:
        if self.calmed:
            return
        try:
            events = self.conn.receive_data(data)
        except H2Error:
            self._flush()  # h2 queued a GOAWAY saying why
            self.transport.close()
            return
        for event in events:
            if self.calmed:
                return
            if isinstance(event, RequestReceived):
                self._admit(event.stream_id, event.headers)
            elif isinstance(event, DataReceived):
                stream = self.streams.get(event.stream_id)
                if stream is not None and not stream.finished:
                    stream.body.append((event.data, event.flow_controlled_length))
                    stream.arrived.set()
                else:  # nobody will read it: give the connection's window back at once
                    self.conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
            elif isinstance(event, StreamEnded):
                if (stream := self.streams.get(event.stream_id)) is not None:
                    stream.ended = True
                    stream.arrived.set()
            elif isinstance(event, StreamReset):
                if (stream := self.streams.get(event.stream_id)) is not None:
                    self._reset_by_client(event.stream_id, stream)
            elif isinstance(event, WindowUpdated | RemoteSettingsChanged):
                for stream in self.streams.values():
                    stream.window.set()
            elif isinstance(event, ConnectionTerminated):
                self.transport.close()
        self._start_fresh()
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self._stop_idle()
        self.fresh.clear()
        for stream in list(self.streams.values()):
            self._abandon(stream)
        self.writable.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: no new streams; close once the open ones are done."""
        self.closing = True
        self.conn.close_connection()
        self._flush()
        if not self.streams:
            self.transport.close()

    # -- admission and waste ----------------------------------------------------------------

    def _admit(self, stream_id: int, raw: list[tuple[bytes, bytes]]) -> None:
        if len(self.streams) >= MAX_STREAMS:
            with contextlib.suppress(H2Error):  # (unless the client reset it already)
                self.conn.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            self._waste()
            return
        self._prepare(stream_id, raw)

    def _start_fresh(self) -> None:
        """The application is called for the streams of this read that are still wanted, only
        once the whole read is handled: a reset that came with the headers costs no call."""
        fresh, self.fresh = self.fresh, []
        for stream_id, stream, scope in fresh:
            if stream.gone:
                continue
            task = stream.task = self.loop.create_task(self._run(stream_id, stream, scope))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            # (_run ends the stream itself; this is for a task cancelled before it first ran)
            task.add_done_callback(functools.partial(self._task_done, stream_id, stream))

    def _reset_by_client(self, stream_id: int, stream: _Stream) -> None:
        if not stream.finished:
            self._waste()
        self._abandon(stream)
        if stream.task is None:  # never started: nothing to wind down
            self._end(stream_id, stream)

    def _abandon(self, stream: _Stream) -> None:
        """The client will not hear the answer: an application that has not started on the
        body is cancelled (nothing it did needs finishing); one reading it stops at its next
        read, keeping what arrived."""
        self._lose(stream)
        if stream.task is not None and not stream.reading:
            stream.task.cancel()

    def _waste(self) -> None:
        self.wasted += 1
        if self.wasted - self.answered > WASTE_ALLOWANCE and not self.calmed:
            self._calm_down()

    def _calm_down(self) -> None:
        log.warning(
            "HTTP/2 client %s reset or overran %d streams (answered %d): GOAWAY",
            self.client[0] if self.client else "?", self.wasted, self.answered,
        )  # fmt: skip
        self.calmed = True
        self.conn.close_connection(ErrorCodes.ENHANCE_YOUR_CALM)
        self._flush()
        self.fresh.clear()
        for stream in list(self.streams.values()):
            self._abandon(stream)
        # Closing with the client's bytes unread would reset the connection, and the GOAWAY
        # could be lost with it: what still comes is read and dropped for a moment.
        self._stop_idle()
        self._idle = self.loop.call_later(LINGER, self.transport.close)

    # -- one request ------------------------------------------------------------------------

    def _prepare(self, stream_id: int, raw: list[tuple[bytes, bytes]]) -> None:
        self._stop_idle()
        pseudo: dict[bytes, bytes] = {}
        headers: list[tuple[bytes, bytes]] = []
        for name, value in raw:
            if name.startswith(b":"):
                pseudo[name] = value
            else:
                headers.append((name, value))
        if b":authority" in pseudo and not any(name == b"host" for name, _ in headers):
            headers.insert(0, (b"host", pseudo[b":authority"]))
        path, _, query = pseudo.get(b":path", b"/").partition(b"?")
        scope = {
            "type": "http",
            "asgi": {"version": self.config.asgi_version, "spec_version": "2.3"},
            "http_version": "2",
            "server": self.server,
            "client": self.client,
            "scheme": "https",
            "method": pseudo.get(b":method", b"GET").decode("ascii"),
            "root_path": self.config.root_path,
            "path": unquote(path.decode("latin-1")),
            "raw_path": path,
            "query_string": query,
            "headers": headers,
            "state": self.app_state.copy(),
        }
        stream = self.streams[stream_id] = _Stream()
        self.fresh.append((stream_id, stream, scope))

    async def _run(self, stream_id: int, stream: _Stream, scope: dict[str, Any]) -> None:
        async def receive() -> dict[str, Any]:
            stream.reading = True
            if stream.gone:
                return {"type": "http.disconnect"}
            while not stream.body and not (stream.ended and not stream.body_taken):
                if stream.gone or stream.finished:
                    return {"type": "http.disconnect"}
                stream.arrived.clear()
                await stream.arrived.wait()
            data, counted = stream.body.popleft() if stream.body else (b"", 0)
            if counted:
                # Taken by the application: the client may send this much more.
                self.conn.acknowledge_received_data(counted, stream_id)
                self._flush()
            more = bool(stream.body) or not stream.ended
            stream.body_taken = not more
            return {"type": "http.request", "body": data, "more_body": more}

        async def send(message: dict[str, Any]) -> None:
            if stream.gone or stream.finished:
                return
            try:
                if message["type"] == "http.response.start":
                    answer = [(b":status", str(message["status"]).encode())]
                    for name, value in message.get("headers", []):
                        name = bytes(name).lower()
                        if name not in _HOP_BY_HOP:
                            answer.append((name, bytes(value)))
                    self.conn.send_headers(stream_id, answer)
                    stream.headers_sent = True
                    self._flush()
                elif message["type"] == "http.response.body":
                    await self._send_body(stream_id, stream, message.get("body", b""),
                                          end=not message.get("more_body", False))  # fmt: skip
            except H2Error:  # the stream closed under us (reset, or the connection went)
                self._lose(stream)

        async def informational(status: int, headers: Sequence[tuple[bytes, bytes]]) -> None:
            if not 102 <= status <= 199 or stream.gone or stream.finished or stream.headers_sent:
                return
            block = [(b":status", str(status).encode())]
            block += [
                (bytes(n).lower(), bytes(v)) for n, v in headers if n.lower() not in _HOP_BY_HOP
            ]
            try:
                self.conn.send_headers(stream_id, block)
                self._flush()
            except H2Error:
                self._lose(stream)

        extensions = scope.setdefault("extensions", {})
        extensions[INFORMATIONAL] = {"send": informational}
        extensions[CLIENT_GONE] = stream.news
        try:
            await self.app(scope, receive, send)
        except Exception:
            log.exception("Exception in ASGI application (HTTP/2)")
            if not stream.gone and not stream.headers_sent:
                with contextlib.suppress(H2Error):
                    self.conn.send_headers(stream_id, [(b":status", b"500")], end_stream=True)
                    stream.finished = True
        finally:
            if not stream.gone and not stream.finished:  # an unfinished answer is cut off
                with contextlib.suppress(H2Error):
                    self.conn.reset_stream(stream_id, ErrorCodes.INTERNAL_ERROR)
            # After a finished answer the client may still send the rest of its body; that is
            # read and dropped (see data_received). A RST_STREAM with NO_ERROR would spare
            # the bytes (RFC 9113, 8.1), but clients such as httpx then fail the request.
            self._end(stream_id, stream)

    async def _send_body(self, stream_id: int, stream: _Stream, body: bytes, end: bool) -> None:
        view = memoryview(body)
        while view or end:
            if stream.gone:
                return
            size = min(len(view), self.conn.max_outbound_frame_size)
            if size:
                size = min(size, self.conn.local_flow_control_window(stream_id))
                if size <= 0:
                    stream.window.clear()
                    await stream.window.wait()
                    continue
            await self.writable.wait()
            if stream.gone:
                return
            last = end and size == len(view)
            self.conn.send_data(stream_id, view[:size].tobytes(), end_stream=last)
            self._flush()
            view = view[size:]
            if last:
                stream.finished = True
                stream.arrived.set()  # a receive() waiting for the end learns of it
                return

    def _task_done(self, stream_id: int, stream: _Stream, task: asyncio.Task[None]) -> None:
        self._end(stream_id, stream)

    def _lose(self, stream: _Stream) -> None:
        stream.gone = True
        stream.arrived.set()
        stream.window.set()
        if not stream.finished:
            client_gone(stream.news)

    def _end(self, stream_id: int, stream: _Stream) -> None:
        if self.streams.get(stream_id) is not stream:
            return  # ended already
        del self.streams[stream_id]
        if stream.finished:
            self.answered += 1
        if self.calmed:
            return
        for _, counted in stream.body:  # left unread: the connection's window comes back
            self.conn.acknowledge_received_data(counted, stream_id)
        stream.body.clear()
        self._flush()
        if self.streams:
            return
        if self.closing:
            self.transport.close()
        else:
            self._wait_idle(self.config.timeout_keep_alive)

    # -- plumbing ---------------------------------------------------------------------------

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.transport.is_closing():
            self.transport.write(data)

    def _wait_idle(self, seconds: float) -> None:
        self._stop_idle()
        if seconds:
            self._idle = self.loop.call_later(seconds, self._close_idle)

    def _stop_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _close_idle(self) -> None:
        self._idle = None
        if not self.streams:
            self.conn.close_connection()
            self._flush()
            self.transport.close()


def _settle(settings: Settings, code: SettingCodes, value: int) -> None:
    """Sets a value of ours at once, without a SETTINGS frame (none other may be pending)."""
    settings[code] = value
    settings.acknowledge()


def _address(value: Any) -> tuple[str, int] | None:
    return (str(value[0]), int(value[1])) if isinstance(value, tuple) else None
