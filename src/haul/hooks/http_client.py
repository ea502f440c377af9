"""A lean HTTP/1.1 client for hook deliveries: POSTs over a few kept-alive connections on
asyncio streams. Hooks are sent from the server's own event loop, beside the uploads, where a
general client's cost per request (httpx: ~2 ms of CPU here) took a third of the uploads'
throughput; this one parses just what a hook answer needs (status, length or chunks, body).
Proxies are not used: a hook receiver is the operator's own service."""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

MAX_ANSWER = 1 << 20  # a hook's answer is a small JSON document
MAX_HEADERS = 100

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class HookProtocolError(ValueError):
    """The receiver's answer is not HTTP/1.x as this client reads it."""


class HookClient:
    def __init__(self, url: str, timeout: float, connections: int = 16) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"a hook URL must be http:// or https://, not {url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.tls = ssl.create_default_context() if parts.scheme == "https" else None
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        default_port = self.port == (443 if self.tls else 80)
        self.authority = self.host if default_port else f"{self.host}:{self.port}"
        if ":" in self.host:  # an IPv6 literal
            self.authority = f"[{self.host}]" + ("" if default_port else f":{self.port}")
        self.timeout = timeout
        self._slots = asyncio.Semaphore(connections)
        self._idle: list[Connection] = []

    async def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """The answer's status and body; raises OSError, TimeoutError, EOFError or
        HookProtocolError when there is none."""
        lines = [f"POST {self.target} HTTP/1.1", f"Host: {self.authority}"]
        lines += [f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        async with self._slots, asyncio.timeout(self.timeout):
            while True:
                reused = bool(self._idle)
                connection = self._idle.pop() if reused else await self._open()
                try:
                    status, answer, keep = await self._exchange(connection, request)
                except (ConnectionError, EOFError):
                    self._drop(connection)
                    if reused:  # the receiver closed an idle connection: a fresh one
                        continue
                    raise
                except BaseException:  # cancelled or timed out mid-answer: unusable
                    self._drop(connection)
                    raise
                if keep:
                    self._idle.append(connection)
                else:
                    self._drop(connection)
                return status, answer

    async def _open(self) -> Connection:
        return await asyncio.open_connection(
            self.host, self.port, ssl=self.tls, server_hostname=self.host if self.tls else None
        )

    @staticmethod
    def _drop(connection: Connection) -> None:
        connection[1].close()

    async def _exchange(self, connection: Connection, request: bytes) -> tuple[int, bytes, bool]:
        reader, writer = connection
        writer.write(request)
        await writer.drain()
        while True:
            status, version, headers = await self._head(reader)
            if status >= 200:
                break  # 1xx answers (100 Continue) precede the real one
        keep = version == b"HTTP/1.1" and headers.get(b"connection", b"").lower() != b"close"
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            return status, await self._chunks(reader), keep
        if b"content-length" in headers:
            length = int(headers[b"content-length"])
            if not 0 <= length <= MAX_ANSWER:
                raise HookProtocolError(f"an answer of {length} bytes is too long for a hook")
            return status, await reader.readexactly(length), keep
        if status in (204, 304):
            return status, b"", keep
        return status, await reader.read(MAX_ANSWER), False  # delimited by closing

    @staticmethod
    async def _head(reader: asyncio.StreamReader) -> tuple[int, bytes, dict[bytes, bytes]]:
        line = await reader.readline()
        if not line:
            raise ConnectionResetError("the hook receiver closed the connection")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise HookProtocolError(f"not an HTTP/1.x status line: {line[:80]!r}")
        headers: dict[bytes, bytes] = {}
        while (field := await reader.readline()) not in (b"\r\n", b"\n"):
            if not field:
                raise ConnectionResetError("the hook receiver closed the connection")
            if len(headers) >= MAX_HEADERS:
                raise HookProtocolError("too many header fields in a hook answer")
            name, _, value = field.partition(b":")
            headers[name.strip().lower()] = value.strip()
        return int(parts[1]), parts[0], headers

    @staticmethod
    async def _chunks(reader: asyncio.StreamReader) -> bytes:
        body = bytearray()
        while True:
            size = int((await reader.readline()).split(b";", 1)[0].strip() or b"x", 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # trailer fields
                return bytes(body)
            if len(body) + size > MAX_ANSWER:
                raise HookProtocolError("a chunked hook answer is too long")
            body += await reader.readexactly(size)
            await reader.readexactly(2)

    async def close(self) -> None:
        while self._idle:
            self._drop(self._idle.pop())
