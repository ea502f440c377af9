"""The fastest a Python receiver can take one HTTP upload here: a bare event-loop protocol
(uvloop) reading the socket into one buffer and writing each read straight to a file, with no
HTTP framework, no thread, no hashing and no bookkeeping. Served as a baseline beside haul:
whatever a real server adds is measured against it.

    python bench/bare_receiver.py PORT DIR     # answers 204 to each request, body to DIR/body
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import cast

import uvloop

READ_SIZE = 1 << 20


class BareReceiver(asyncio.BufferedProtocol):
    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.buffer = memoryview(bytearray(READ_SIZE))
        self.head = b""
        self.remaining: int | None = None
        self.fd = -1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's, not asyncio's class

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        data = self.buffer[:nbytes]
        if self.remaining is None:  # still in the request head
            self.head += bytes(data)
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            length = next(
                int(line.split(b":", 1)[1])
                for line in self.head[:end].split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            data = memoryview(self.head[end + 4 :])
            self.head, self.remaining = b"", length
            path = os.path.join(self.directory, "body")
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(self.fd, data)
        self.remaining -= len(data)
        if self.remaining <= 0:
            os.close(self.fd)
            self.remaining = None
            self.transport.write(b"HTTP/1.1 204 No Content\r\n\r\n")


async def main(port: int, directory: str) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: BareReceiver(directory), "127.0.0.1", port)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), sys.argv[2]))
