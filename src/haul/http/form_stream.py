"""A multipart/form-data body read as a stream: one part at a time, a file part's bytes handed
on as they arrive (never held whole), small fields bounded. Built on python-multipart's
callback parser; every malformation is a 400."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from haul.errors import BadRequest

MAX_FIELD = 4096  # bytes of a field that is not a file: hashes, numbers, names
MAX_PARTS = 32
MAX_HEADER = 8192  # bytes of one part's headers


@dataclass
class Part:
    name: str
    filename: str | None
    data: AsyncIterator[bytes]

    async def text(self) -> str:
        """A small field's value (at most MAX_FIELD bytes of UTF-8)."""
        value = bytearray()
        async for piece in self.data:
            value += piece
            if len(value) > MAX_FIELD:
                raise BadRequest(f"the form field {self.name!r} is longer than {MAX_FIELD} bytes")
        try:
            return value.decode()
        except UnicodeDecodeError:
            raise BadRequest(f"the form field {self.name!r} is not UTF-8") from None


def boundary_of(content_type: str | None) -> bytes:
    kind, options = parse_options_header(content_type or "")
    if kind != b"multipart/form-data":
        raise BadRequest("the body must be multipart/form-data")
    boundary = options.get(b"boundary", b"")
    if not 1 <= len(boundary) <= 70:
        raise BadRequest("the multipart/form-data Content-Type has no valid boundary")
    return boundary


class FormStream:
    def __init__(self, source: AsyncIterator[bytes], boundary: bytes) -> None:
        self._source = source
        self._events: deque[tuple[str, bytes]] = deque()
        self._ended = False
        self._header = bytearray()
        self._header_size = 0
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": lambda: self._events.append(("begin", b"")),
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": lambda: self._events.append(("headers", b"")),
                "on_part_data": self._data,
                "on_part_end": lambda: self._events.append(("end", b"")),
                "on_end": lambda: self._events.append(("finish", b"")),
            },
        )

    def _grow(self, size: int) -> None:
        self._header_size += size
        if self._header_size > MAX_HEADER:
            raise BadRequest(f"a form part's headers are longer than {MAX_HEADER} bytes")

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._grow(end - start)
        self._header += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._grow(end - start)
        if b"\0" not in self._header:
            self._header += b"\0"
        self._header += data[start:end]

    def _header_end(self) -> None:
        self._events.append(("header", bytes(self._header)))
        self._header = bytearray()

    def _data(self, data: bytes, start: int, end: int) -> None:
        if end > start:
            self._events.append(("data", bytes(data[start:end])))

    async def _next(self) -> tuple[str, bytes]:
        while not self._events:
            if self._ended:
                raise BadRequest("the multipart body ended before its closing boundary")
            try:
                piece = await anext(self._source)
            except StopAsyncIteration:
                self._ended = True
                continue
            try:
                self._parser.write(piece)
            except MultipartParseError as exc:
                raise BadRequest(f"the multipart body is malformed: {exc}") from None
        return self._events.popleft()

    async def _part_data(self) -> AsyncIterator[bytes]:
        while True:
            kind, value = await self._next()
            if kind == "end":
                return
            yield value

    async def parts(self) -> AsyncIterator[Part]:
        """Each part in order; a part's data must be read (or is skipped) before the next."""
        count = 0
        while True:
            kind, _ = await self._next()
            if kind == "finish":
                return
            count += 1
            if count > MAX_PARTS:
                raise BadRequest(f"the form has more than {MAX_PARTS} parts")
            headers: dict[bytes, bytes] = {}
            self._header_size = 0
            while (event := await self._next())[0] == "header":
                name, _, value = event[1].partition(b"\0")
                headers[name.strip().lower()] = value.strip()
            disposition, options = parse_options_header(headers.get(b"content-disposition", b""))
            if disposition != b"form-data" or not options.get(b"name"):
                raise BadRequest("a form part has no Content-Disposition: form-data with a name")
            filename = options.get(b"filename")
            data = self._part_data()
            yield Part(
                name=options[b"name"].decode("utf-8", "replace"),
                filename=None if filename is None else filename.decode("utf-8", "replace"),
                data=data,
            )
            async for _ in data:  # what the reader left of the part
                pass
