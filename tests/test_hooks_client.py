"""The hooks' HTTP/1.1 client against real sockets: answers framed every way HTTP/1.1 allows,
a receiver that drops kept-alive connections, one that never answers, one that is not there."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from haul.compose import build_hooks
from haul.config import Settings
from haul.errors import ConfigError
from haul.hooks.http_client import HookClient, HookProtocolError
from haul.hooks.transports import HttpTransport, signature
from haul.records.memory import MemoryStore
from tests.helpers import free_port

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )  # fmt: skip
    return head, await reader.readexactly(length)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Serve], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Serve) -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook?x=1"

    yield start
    for server in servers:
        server.close()


async def test_answers_by_length_by_chunks_and_by_closing(
    serve: Callable[[Serve], Awaitable[str]],
) -> None:
    answers = [
        b'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n{"a":1}',
        b'HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{"b\r\n4;x=y\r\n":2}\r\n'
        b"0\r\nTrailer: t\r\n\r\n",
        b"HTTP/1.1 202 Accepted\r\nConnection: close\r\n\r\nuntil closed",
    ]
    seen: list[bytes] = []
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while answers:
            head, body = await read_request(reader)
            seen.append(head + body)
            answer = answers.pop(0)
            writer.write(answer)
            await writer.drain()
            if b"close" in answer:
                break
        writer.close()

    client = HookClient(await serve(handler), timeout=5)
    assert await client.post(b"one", {"Haul-Event-Id": "1"}) == (200, b'{"a":1}')
    assert await client.post(b"two", {}) == (201, b'{"b":2}')
    assert await client.post(b"three", {}) == (202, b"until closed")
    assert connections == 1  # kept alive until the receiver said close
    assert seen[0].startswith(b"POST /hook?x=1 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nHaul-Event-Id: 1\r\n" in seen[0]
    assert seen[0].endswith(b"\r\n\r\none")
    await client.close()


async def test_a_dropped_idle_connection_is_replaced(
    serve: Callable[[Serve], Awaitable[str]],
) -> None:
    async def one_answer_each(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")  # keep-alive, then it hangs up
        await writer.drain()
        writer.close()

    client = HookClient(await serve(one_answer_each), timeout=5)
    for _ in range(3):
        assert await client.post(b"{}", {}) == (204, b"")
    await client.close()


async def test_silence_times_out_and_garbage_is_refused(
    serve: Callable[[Serve], Awaitable[str]],
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(30)

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()

    with pytest.raises(TimeoutError):
        await HookClient(await serve(silent), timeout=0.2).post(b"{}", {})
    with pytest.raises(HookProtocolError):
        await HookClient(await serve(garbage), timeout=5).post(b"{}", {})


async def test_the_transport_signs_and_never_raises(
    serve: Callable[[Serve], Awaitable[str]],
) -> None:
    got: list[bytes] = []

    async def failing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, _ = await read_request(reader)
        got.append(head)
        writer.write(b"HTTP/1.1 500 Oops\r\nContent-Length: 4\r\n\r\noops")
        await writer.drain()

    transport = HttpTransport(await serve(failing), "s3cret", timeout=5)
    answer = await transport.send("ev1", b'{"id":"ev1"}')
    assert not answer.ok
    assert answer.detail == "the hook answered 500"
    assert answer.body == b"oops"
    expected = signature("s3cret", b'{"id":"ev1"}').encode()
    assert b"\r\nHaul-Signature: " + expected + b"\r\n" in got[0]
    assert b"\r\nHaul-Event-Id: ev1\r\n" in got[0]
    await transport.close()
    nobody = HttpTransport(f"http://127.0.0.1:{free_port()}/", "", timeout=5)
    refused = await nobody.send("ev2", b"{}")
    assert not refused.ok
    assert "could not be reached" in refused.detail


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        ({"hook_url": "ftp://example.com/"}, "--hook-url: a hook URL must be http"),
        ({"hook_url": "http://h/", "hook_command": "cat"}, "exclude each other"),
        ({"hook_url": "http://h/", "hook_events": ("post-upload",)}, "unknown post-upload"),
    ],
)
def test_hook_settings_the_server_cannot_use_are_refused_in_words(
    settings: dict[str, object], said: str
) -> None:
    with pytest.raises(ConfigError, match=said):
        build_hooks(Settings(**settings), MemoryStore())  # type: ignore[arg-type]


def test_without_a_hook_target_there_are_no_hooks() -> None:
    assert build_hooks(Settings(), MemoryStore()) is None
