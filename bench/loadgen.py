"""A minimal HTTP/1.1 load generator on raw asyncio streams, so that the client is not what a
many-clients benchmark measures (httpx spends more CPU per request than the servers do)."""

from __future__ import annotations

import asyncio
import os
import time
from urllib.parse import urlsplit


async def _request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: str, body: bytes = b""
) -> tuple[int, dict[str, str]]:
    writer.write(head.encode() + body)
    await writer.drain()
    status_line = await reader.readline()
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while size := int((await reader.readline()).strip() or b"0", 16):
            await reader.readexactly(size + 2)
        await reader.readline()
    elif length := int(headers.get("content-length", "0")):
        await reader.readexactly(length)
    if not status_line:
        raise ConnectionResetError("the server closed the connection")
    return int(status_line.split()[1]), headers


async def many_uploads(endpoint: str, count: int, size: int, concurrency: int) -> dict[str, float]:
    """``count`` uploads of ``size`` bytes over ``concurrency`` keep-alive connections:
    creation, then one PATCH, each."""
    parts = urlsplit(endpoint)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path
    body = os.urandom(size)
    latencies: list[float] = []
    remaining = iter(range(count))

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for _ in remaining:
                started = time.perf_counter()
                status, headers = await _request(reader, writer, (
                    f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nTus-Resumable: 1.0.0\r\n"
                    f"Upload-Length: {size}\r\nContent-Length: 0\r\n\r\n"))  # fmt: skip
                assert status == 201, status
                target = urlsplit(headers["location"]).path
                status, _ = await _request(reader, writer, (
                    f"PATCH {target} HTTP/1.1\r\nHost: {host}:{port}\r\nTus-Resumable: 1.0.0\r\n"
                    "Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n"
                    f"Content-Length: {size}\r\n\r\n"), body)  # fmt: skip
                assert status == 204, status
                latencies.append(time.perf_counter() - started)
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "uploads_per_s": count / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000,
    }
