"""The HTTP/1.1 layer under the application (uvicorn's protocol with haul's lean body path),
spoken to over raw sockets: pipelined requests, chunked bodies, 100-continue, and bodies far
larger than the read buffer and the pause mark, which must arrive byte for byte."""

from __future__ import annotations

import hashlib
import os
import socket

import httpx

from haul.transport.http1 import HIGH_WATER, READ_SIZE
from tests.helpers import TUS, HaulServer

MiB = 1 << 20


def create(server: HaulServer, length: int) -> str:
    response = httpx.post(server.endpoint, headers={**TUS, "Upload-Length": str(length)})
    assert response.status_code == 201
    return httpx.URL(response.headers["location"]).path


def patch_head(path: str, offset: int, extra: str) -> bytes:
    return (
        f"PATCH {path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: {offset}\r\n"
        f"Content-Type: application/offset+octet-stream\r\n{extra}\r\n"
    ).encode()


def read_responses(sock: socket.socket, count: int) -> list[bytes]:
    """Status lines of ``count`` responses without bodies (204s)."""
    data = b""
    while data.count(b"\r\n\r\n") < count:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return [block.split(b"\r\n", 1)[0] for block in data.split(b"\r\n\r\n")[:count]]


def stored(server: HaulServer, path: str) -> bytes:
    return httpx.get(f"{server.url}{path}", headers=TUS).content


def test_pipelined_patches_on_one_connection(server: HaulServer) -> None:
    first, second = os.urandom(3 * MiB + 7), os.urandom(5 * MiB + 1)
    path = create(server, len(first) + len(second))
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            patch_head(path, 0, f"Content-Length: {len(first)}\r\n")
            + first
            + patch_head(path, len(first), f"Content-Length: {len(second)}\r\n")
            + second
        )
        assert read_responses(sock, 2) == [b"HTTP/1.1 204 No Content"] * 2
    assert stored(server, path) == first + second


def test_chunked_body_in_uneven_chunks(server: HaulServer) -> None:
    data = os.urandom(2 * READ_SIZE + 12345)
    path = create(server, len(data))
    sizes = [1, 7, 65536, READ_SIZE - 3, 4096, READ_SIZE + 5]
    pieces, position = [], 0
    while position < len(data):
        size = sizes[len(pieces) % len(sizes)]
        pieces.append(data[position : position + size])
        position += size
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(patch_head(path, 0, "Transfer-Encoding: chunked\r\n") + body)
        assert read_responses(sock, 1) == [b"HTTP/1.1 204 No Content"]
    assert stored(server, path) == data


def test_expect_100_continue_then_body(server: HaulServer) -> None:
    data = os.urandom(MiB)
    path = create(server, len(data))
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        expect = f"Content-Length: {len(data)}\r\nExpect: 100-continue\r\n"
        sock.sendall(patch_head(path, 0, expect))
        assert read_responses(sock, 1) == [b"HTTP/1.1 100 Continue"]
        sock.sendall(data)
        assert read_responses(sock, 1) == [b"HTTP/1.1 204 No Content"]
    assert stored(server, path) == data


def test_body_many_times_the_pause_mark_arrives_intact(server: HaulServer) -> None:
    size = 16 * HIGH_WATER + 3
    data = os.urandom(size)
    path = create(server, size)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(patch_head(path, 0, f"Content-Length: {size}\r\n"))
        view = memoryview(data)
        for start in range(0, size, 100_003):  # odd sends, so reads straddle every boundary
            sock.sendall(view[start : start + 100_003])
        assert read_responses(sock, 1) == [b"HTTP/1.1 204 No Content"]
    assert hashlib.sha256(stored(server, path)).digest() == hashlib.sha256(data).digest()
