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
    temp file; sent as a part when full."""

    def __init__(self, storage: S3Storage) -> None:
        self.storage = storage
        self.file = storage._spool()
        self.size = 0

    def add(self, data: bytes) -> None:
        self.file.write(data)
        self.size += len(data)

    def full(self, number: int) -> bool:
        return self.size >= self.storage.part_size_for(number)

    def read(self) -> bytes:
        self.file.seek(0)
        return self.file.read()

    async def send(self, key: str, mpu: str, number: int) -> str:
        """Upload what is held as part ``number`` of ``key``; its ETag. Starts over empty."""
        self.file.seek(0)
        answer = await (await self.storage._s3()).upload_part(
            Bucket=self.storage.bucket, Key=key, UploadId=mpu, PartNumber=number,
            Body=self.file, ContentLength=self.size,
        )  # fmt: skip
        self.close()
        self.file, self.size = self.storage._spool(), 0
        return str(answer["ETag"])

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
        self.spool = PartSpool(storage)
        if tail:
            self.spool.add(tail)

    async def write(self, pieces: Sequence[bytes]) -> None:
        for piece in pieces:
            self.spool.add(piece)
        if self.spool.full(len(self.parts) + 1):
            await self._send_part()

    async def _send_part(self) -> None:
        number, size = len(self.parts) + 1, self.spool.size
        key = self.storage._key(self.upload_id)
        etag = await self.spool.send(key, self.state.mpu, number)
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
