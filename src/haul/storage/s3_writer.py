"""Appending to an unfinished S3 upload: a request's bytes are spooled (in memory up to the
storage's ``buffer_memory``, then in a temp file) until a part is full, then sent as the next
part of the multipart upload; what is left when the request ends becomes the new tail object.
The state object is written after the bytes, so it can under-report but never over-report."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from haul.storage.s3_state import Part, S3State, Tail

if TYPE_CHECKING:
    from haul.storage.s3 import S3Storage


class PartSpool:
    """The bytes of the next multipart part, in memory up to ``buffer_memory``, then in a
    temp file; sent as a part when full, cut at exactly the part's size."""

    def __init__(self, storage: S3Storage, state: S3State | None = None) -> None:
        self.storage = storage
        self.state = state  # whose part sizes apply
        self.file = storage._spool()
        self.size = 0

    def add(self, data: bytes) -> None:
        self.file.write(data)
        self.size += len(data)

    def full(self, number: int) -> bool:
        return self.size >= self.storage.part_size_for(number, self.state)

    def read(self) -> bytes:
        self.file.seek(0)
        return self.file.read()

    async def send(self, key: str, mpu: str, number: int) -> tuple[str, int]:
        """Upload part ``number`` of ``key``: the bytes held, up to the part's size (the rest
        is kept for the next part). Its ETag and size."""
        size = min(self.size, self.storage.part_size_for(number, self.state))
        rest = self.storage._spool()
        self.file.seek(size)
        while block := self.file.read(1 << 20):
            rest.write(block)
        self.file.truncate(size)
        self.file.seek(0)
        try:
            answer = await (await self.storage._s3()).upload_part(
                Bucket=self.storage.bucket, Key=key, UploadId=mpu, PartNumber=number,
                Body=self.file, ContentLength=size,
            )  # fmt: skip
        except BaseException:  # held as before: nothing was sent
            self.file.seek(size)
            rest.seek(0)
            while block := rest.read(1 << 20):
                self.file.write(block)
            rest.close()
            raise
        self.close()
        self.file, self.size = rest, self.size - size
        return str(answer["ETag"]), size

    def close(self) -> None:
        self.file.close()


class S3Writer:
    def __init__(
        self, storage: S3Storage, upload_id: str, state: S3State, tail: bytes, atomic: bool
    ) -> None:
        self.storage = storage
        self.upload_id = upload_id
        self.state = state
        self.atomic = atomic
        self.parts: list[Part] = list(state.parts)  # committed + sent by this writer
        self.old_tail: str | None = state.tail.key if state.tail else None
        self.tail_consumed = False  # the old tail's bytes went into a part
        self.spool = PartSpool(storage, state)
        if tail:
            self.spool.add(tail)

    async def write(self, pieces: Sequence[bytes]) -> None:
        for piece in pieces:
            self.spool.add(piece)
        while self.spool.full(len(self.parts) + 1):
            await self._send_part()

    async def _send_part(self) -> None:
        number = len(self.parts) + 1
        key = self.storage._key(self.upload_id)
        etag, size = await self.spool.send(key, self.state.mpu, number)
        self.parts.append(Part(number, size, etag))
        self.tail_consumed = True
        if not self.atomic:  # what reached the storage counts at once
            await self.storage._save_state(self.upload_id, self.state.with_parts(self._sent, None))
            await self._drop_old_tail()

    @property
    def _sent(self) -> tuple[Part, ...]:
        return tuple(self.parts)

    async def commit(self) -> int:
        tail = None
        if self.spool.size:
            key = f"{self.storage._key(self.upload_id)}.tail.{uuid.uuid4().hex}"
            await self.storage._put(key, self.spool.read())
            tail = Tail(key, self.spool.size)
        elif self.old_tail and not self.tail_consumed:
            tail = self.state.tail
        state = self.state.with_parts(self._sent, tail)
        await self.storage._save_state(self.upload_id, state)
        if tail is None or tail.key != self.old_tail:
            await self._drop_old_tail()
        self.spool.close()
        return state.held

    async def discard(self) -> None:
        # Unrecorded parts are never listed when the upload completes: S3 drops them.
        self.spool.close()

    async def _drop_old_tail(self) -> None:
        if self.old_tail:
            await self.storage._delete_key(self.old_tail)
            self.old_tail = None
