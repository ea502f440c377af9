"""A TCP proxy for tests that counts, throttles, stalls and cuts connections on demand."""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from tests.helpers import free_port


@dataclass
class Link:
    """One client connection through the proxy. Events are numbered in the order the proxy saw
    them (``opened``, ``client_closed``), so a test can tell what happened before what."""

    opened: int
    upstream_bytes: int = 0
    awaiting_answer: bool = False  # request bytes went up since the last answer came down
    stalled: bool = False
    client_closed: int | None = None  # when the client closed or reset its side
    flip_pending: bool = False  # the next body byte up is to be damaged (see corrupt_patch)
    closed_event: threading.Event = field(default_factory=threading.Event)


class ChaosProxy:
    """Forwards 127.0.0.1:<port> to 127.0.0.1:<target_port> from a background thread.

    Knobs (change them any time): ``rate`` limits client→server bytes per second (None = no
    limit); ``cut_probability`` is the chance, per forwarded piece of upstream data, that the
    connection is reset; ``stall`` makes every connection stop forwarding (without closing);
    ``lose_answer_to`` (bytes, one shot) lets the first request containing them reach the server
    but cuts its connection before the answer comes back. ``corrupt_patch`` (one shot) flips
    the first body byte of the next PATCH request with a body, as a faulty network would;
    ``corrupted`` counts the bodies so damaged. With ``record_patches`` the head of every PATCH
    request is kept in ``patch_heads``. ``upstream_bytes`` counts what reached the
    server. ``stall_busy()`` stalls, for good, the connections that are in the
    middle of a request: only their client can end them.
    """

    def __init__(self, target_port: int, *, rate: float | None = None, seed: int = 0) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.rate = rate
        self.cut_probability = 0.0
        self.stall = False
        self.lose_answer_to: bytes | None = None
        self.answers_lost = 0
        self.corrupt_patch = False
        self.corrupted = 0
        self.record_patches = False
        self.patch_heads: list[bytes] = []
        self.upstream_bytes = 0
        self.downstream_bytes = 0  # what the target answered: a read-back shows here
        self.cuts = 0
        self.links: list[Link] = []
        self._events = itertools.count()
        self._random = random.Random(seed)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def start(self) -> ChaosProxy:
        self._thread.start()

        async def listen() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

        self._call(listen())
        return self

    def stall_busy(self) -> list[Link]:
        """Stall, never to recover, every connection carrying a request right now. A stalled
        connection takes what its client sends and drops it, passes nothing back (no answer, no
        close, no reset from the server), and records when its client closed it. Connections
        opened later are not stalled."""

        async def stall() -> list[Link]:
            busy = [link for link in self.links if link.awaiting_answer]
            for link in busy:
                link.stalled = True
            return busy

        result: list[Link] = self._call(stall())
        return result

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()

        self._call(close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _inspect(self, link: Link, data: bytes) -> bytes:
        """``data`` with its first PATCH body byte flipped, when corrupt_patch asks for it; the
        PATCH heads noted. Clients write a request's head before its body, in one piece."""
        flip = 0
        if (self.corrupt_patch or self.record_patches) and not link.flip_pending:
            start = data.find(b"PATCH ")
            head_end = data.find(b"\r\n\r\n", start) if start >= 0 else -1
            if head_end < 0:
                return data
            if self.record_patches:
                self.patch_heads.append(data[start:head_end])
            if not self.corrupt_patch or _content_length(data[start:head_end]) == 0:
                return data
            self.corrupt_patch, link.flip_pending = False, True
            flip = head_end + 4
        if not link.flip_pending or flip >= len(data):
            return data
        damaged = bytearray(data)
        damaged[flip] ^= 0xFF
        link.flip_pending = False
        self.corrupted += 1
        return bytes(damaged)

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.transport.abort()
            return
        self._writers |= {client_w, server_w}
        link = Link(opened=next(self._events))
        self.links.append(link)

        def cut() -> None:
            client_w.transport.abort()
            server_w.transport.abort()

        answer_lost = False

        def client_gone() -> None:
            link.client_closed = next(self._events)
            link.closed_event.set()

        async def up() -> None:
            nonlocal answer_lost
            while True:
                try:
                    data = await client_r.read(64 * 1024)
                except OSError:
                    if link.stalled:
                        client_gone()
                        return
                    raise
                if not data:
                    break
                if link.stalled:
                    continue  # swallowed
                link.awaiting_answer = True
                if self.lose_answer_to and self.lose_answer_to in data:
                    self.lose_answer_to, answer_lost = None, True
                data = self._inspect(link, data)
                while self.stall:
                    await asyncio.sleep(0.05)
                if self.cut_probability and self._random.random() < self.cut_probability:
                    self.cuts += 1
                    cut()
                    return
                if self.rate:
                    await asyncio.sleep(len(data) / self.rate)
                server_w.write(data)
                self.upstream_bytes += len(data)
                link.upstream_bytes += len(data)
                await server_w.drain()
            if link.stalled:
                client_gone()
                return
            server_w.write_eof()

        async def down() -> None:
            while True:
                try:
                    data = await server_r.read(64 * 1024)
                except OSError:
                    if link.stalled:
                        return  # the server gave up on it: the client must find out alone
                    raise
                if not data:
                    break
                if link.stalled:
                    continue
                link.awaiting_answer = False
                if answer_lost:
                    self.answers_lost += 1
                    cut()
                    return
                while self.stall:
                    await asyncio.sleep(0.05)
                client_w.write(data)
                self.downstream_bytes += len(data)
                await client_w.drain()
            if not link.stalled:
                client_w.close()

        try:
            await asyncio.gather(up(), down())
            if link.stalled:  # its client is gone: let go of the server's side too
                cut()
        except (OSError, asyncio.IncompleteReadError):
            cut()
        finally:
            self._writers -= {client_w, server_w}


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip() or 0)
    return 0
