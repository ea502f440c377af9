"""Upload bytes in any S3-compatible object store (AWS S3, MinIO, Ceph RGW, R2, OSS), using
only what they all implement: multipart uploads, UploadPartCopy, ranged GET.

An unfinished upload is a multipart upload plus a small JSON state object that S3 itself
holds: the parts committed so far (number, size, ETag) and the tail, the last bytes too few
to be a part yet. The offset is what that state says, so a node that dies between sending a
part and recording it can only under-report, never lie upward: the client sends those bytes
again. Part sizes grow with the part number (doubling every 1,000 parts from ``part_size``),
so 10,000 parts always reach S3's 5 TiB object limit, or, for stores that need it, are all one
size (see s3_parts). A request's full parts go up in the background while its next bytes
arrive (s3_writer: at most ``parts_in_flight`` per upload, ``memory`` bytes of parts per node).

Finished, the multipart upload is completed (the tail joins as the last part) and the object is
read with ranged GETs. Concatenation and instant-upload sharing are server-side copies
(UploadPartCopy, or partials placed into the final's upload: s3_concat): no byte passes haul.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from contextvars import ContextVar
from typing import Any

from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from haul.core.interfaces import StoredBytesMissing
from haul.errors import BadRequest, OffsetMismatch, StoreUnavailable
from haul.storage import s3_concat
from haul.storage.s3_config import ReportingClient, client_config, is_missing, missing_as_contract
from haul.storage.s3_copy import copy_together
from haul.storage.s3_parts import MIN_PART, MiB, equal_size, growing_size
from haul.storage.s3_signing import prehashed
from haul.storage.s3_state import Part, S3State
from haul.storage.s3_writer import ByteBudget, PartBuffers, S3Writer

MPU_CACHE = 4096  # multipart ids remembered (see multipart_id)
WARM_TIMEOUT = 5.0  # seconds open() waits for the store
WARM_OPERATIONS = ("GetObject", "PutObject", "CreateMultipartUpload", "UploadPart",
                   "CompleteMultipartUpload", "HeadObject", "DeleteObject")  # fmt: skip
log = logging.getLogger("haul")
_ID = re.compile(r"[0-9a-f]{32}")
# The state a request's offset() just read, for its open_writer() right after (the caller holds
# the upload's lock in between): one GET of the state per request, not two. Per task, so no
# other request ever sees it; taken once, and dropped by anything this task changes.
_JUST_READ: ContextVar[tuple[S3Storage, str, S3State] | None] = ContextVar("s3_state", default=None)


class S3Storage:
    reads_while_writing = False

    def __init__(
        self,
        *,
        bucket: str,
        endpoint: str | None = None,
        region: str | None = None,
        prefix: str = "haul/",
        addressing: str = "auto",
        access_key: str | None = None,
        secret_key: str | None = None,
        part_size: int = 8 * MiB,
        parts_in_flight: int = 4,
        memory: int = 512 * MiB,
        equal_parts: bool = False,
        timeout: float = 60.0,
        retries: int = 4,
    ) -> None:
        self.bucket = bucket
        self.endpoint = endpoint
        self.region = region
        self.prefix = prefix
        self.addressing = addressing
        self.access_key = access_key
        self.secret_key = secret_key
        self.part_size = max(MIN_PART, part_size)
        self.parts_in_flight = max(1, parts_in_flight)
        self.budget = ByteBudget(memory)
        self.buffers = PartBuffers(memory)
        self.equal_parts = equal_parts
        self.timeout = timeout
        # No endpoint: AWS, over TLS.
        self.tls = not (endpoint or "https:").lower().startswith("http:")
        self.retries = retries
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._mpus: dict[str, str] = {}  # upload id -> its multipart id, see multipart_id

    # -- plumbing -------------------------------------------------------------------------

    async def _s3(self) -> Any:
        if self._client is None:
            self._stack = AsyncExitStack()
            config = client_config(
                addressing=self.addressing, timeout=self.timeout, retries=self.retries,
                tls=self.tls,
            )  # fmt: skip
            # Credentials: given ones, else the usual AWS sources (environment, profile, role).
            client = get_session().create_client(
                "s3", endpoint_url=self.endpoint, region_name=self.region, config=config,
                aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            )  # fmt: skip
            self._client = ReportingClient(await self._stack.enter_async_context(client))
        return self._client

    async def open(self) -> None:
        """Make the client and its first connection now: botocore builds a client from its
        service model, and its first call of each operation from that operation's, which held
        a fresh server's first requests on the event loop for ~0.1 s. Best effort: a store
        that does not answer now is asked again by each request."""
        s3 = await self._s3()
        for operation in WARM_OPERATIONS:
            s3.meta.service_model.operation_model(operation)
        try:
            await asyncio.wait_for(s3.head_bucket(Bucket=self.bucket), WARM_TIMEOUT)
        except (ClientError, StoreUnavailable, TimeoutError) as exc:
            log.warning("the object store did not answer at startup: %s", exc)

    async def close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None
            self._client = None

    def _key(self, upload_id: str) -> str:
        return f"{self.prefix}{upload_id}"

    def part_size_for(self, number: int, state: S3State | None = None) -> int:
        """Part ``number``'s size: the one an equal-parts upload chose at creation, else
        growing with the number (see s3_parts)."""
        chosen = state.extra.get("part_size") if state is not None else None
        if isinstance(chosen, int):
            return chosen
        if self.equal_parts:
            return self.part_size
        return growing_size(self.part_size, number)

    async def _put(self, key: str, body: bytes) -> None:
        _JUST_READ.set(None)
        await (await self._s3()).put_object(Bucket=self.bucket, Key=key, Body=body)

    async def _delete_key(self, key: str) -> None:
        _JUST_READ.set(None)
        await (await self._s3()).delete_object(Bucket=self.bucket, Key=key)

    async def upload_part(self, key: str, mpu: str, number: int, body: bytes | bytearray) -> str:
        """Send part ``number`` of ``key``'s multipart upload ``mpu``; its ETag."""
        s3 = await self._s3()
        # Over TLS the body goes unsigned (with its CRC32): nothing to hash beforehand.
        signing = prehashed(body) if not self.tls else contextlib.nullcontext()
        async with signing:
            answer = await s3.upload_part(
                Bucket=self.bucket, Key=key, UploadId=mpu, PartNumber=number, Body=body,
                ContentLength=len(body),
            )  # fmt: skip
        return str(answer["ETag"])

    async def _load_state(self, upload_id: str) -> S3State | None:
        try:
            answer = await (await self._s3()).get_object(
                Bucket=self.bucket, Key=self._key(upload_id) + ".state"
            )
        except ClientError as exc:
            if is_missing(exc):
                return None
            raise
        async with answer["Body"] as body:
            return S3State.decode(await body.read())

    async def _save_state(self, upload_id: str, state: S3State) -> None:
        await self._put(self._key(upload_id) + ".state", state.encode())

    async def _object_size(self, key: str) -> int | None:
        try:
            head = await (await self._s3()).head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if is_missing(exc):
                return None
            raise
        return int(head["ContentLength"])

    # -- the Storage interface ------------------------------------------------------------

    async def create(self, upload_id: str, length: int | None = None) -> None:
        if await self._load_state(upload_id) is not None:
            return  # a second multipart upload would lose the first one's parts
        started = await (await self._s3()).create_multipart_upload(
            Bucket=self.bucket, Key=self._key(upload_id)
        )
        extra: dict[str, object] = {}
        if self.equal_parts:  # fixed now: every node cuts this upload's parts alike
            extra["part_size"] = equal_size(self.part_size, length)
        await self._save_state(upload_id, S3State(mpu=str(started["UploadId"]), extra=extra))

    async def offset(self, upload_id: str) -> int:
        state = await self._load_state(upload_id)
        if state is None:  # finished (or never created)
            return await self._object_size(self._key(upload_id)) or 0
        _JUST_READ.set((self, upload_id, state))
        return state.held

    async def _state_just_read(self, upload_id: str) -> S3State | None:
        """The state this task's offset() just read (taken once), else a fresh read."""
        just_read = _JUST_READ.get()
        _JUST_READ.set(None)
        if just_read is not None and just_read[:2] == (self, upload_id):
            return just_read[2]
        return await self._load_state(upload_id)

    async def open_writer(self, upload_id: str, offset: int, *, atomic: bool) -> S3Writer:
        state = await self._state_just_read(upload_id)
        if state is None:
            raise OffsetMismatch(f"upload {upload_id} is already complete")
        current = state.held
        if offset != current:
            raise OffsetMismatch(f"the upload's offset is {current}, the request says {offset}")
        tail = state.tail_data
        if state.tail:  # a separate tail (earlier releases): fetched to append to it
            with missing_as_contract(f"the tail of upload {upload_id}"):
                answer = await (await self._s3()).get_object(Bucket=self.bucket, Key=state.tail.key)
            async with answer["Body"] as body:
                tail = await body.read()
        return S3Writer(self, upload_id, state, tail, atomic)

    async def finish(self, upload_id: str) -> None:
        state = await self._load_state(upload_id)
        if state is None:
            return  # finished already
        s3 = await self._s3()
        if state.placed:  # its bytes are parts of the final's upload, which completes it
            await self._finish_placed(upload_id, state)
            return
        key = self._key(upload_id)
        if await self._object_size(key) is not None:
            # Completed by an earlier attempt (on any node) that died before removing its state.
            await self._forget_state(upload_id, state)
            return
        parts = list(state.parts)
        if state.tail_data:
            number = state.next_number
            etag = await self.upload_part(key, state.mpu, number, state.tail_data)
            parts.append(Part(number, len(state.tail_data), etag))
        elif state.tail:
            copied = await s3.upload_part_copy(
                Bucket=self.bucket, Key=key, UploadId=state.mpu, PartNumber=len(parts) + 1,
                CopySource={"Bucket": self.bucket, "Key": state.tail.key},
            )  # fmt: skip
            parts.append(Part(len(parts) + 1, state.tail.size, copied["CopyPartResult"]["ETag"]))
        try:
            if parts:
                await s3.complete_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=state.mpu,
                    MultipartUpload={
                        "Parts": [{"PartNumber": p.number, "ETag": p.etag} for p in parts]
                    },
                )  # fmt: skip
            else:  # an empty upload: S3 cannot complete a multipart upload without parts
                await s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=state.mpu)
                await self._put(key, b"")
        except ClientError as exc:
            # Completed by an earlier attempt that died before removing its state.
            if not is_missing(exc) or await self._object_size(key) is None:
                raise
        await self._forget_state(upload_id, state)

    async def _finish_placed(self, upload_id: str, state: S3State) -> None:
        """The leftover (only the last partial has one) goes up as the final's last part."""
        if not state.tail_data:
            return
        assert state.placed is not None
        number = state.next_number
        etag = await self.upload_part(state.placed.key, state.placed.mpu, number, state.tail_data)
        parts = (*state.parts, Part(number, len(state.tail_data), etag))
        await self._save_state(upload_id, state.with_parts(parts))

    async def place(
        self, part_name: str, final_name: str, layout: Sequence[int], index: int
    ) -> bool:
        return await s3_concat.place(self, part_name, final_name, layout, index)

    async def _forget_state(self, upload_id: str, state: S3State) -> None:
        # The tail first: a crash between the two leaves a state naming a missing tail (which
        # the next delete cleans up), never a tail no state names.
        if state.tail:
            await self._delete_key(state.tail.key)
        await self._delete_key(self._key(upload_id) + ".state")

    async def read(self, upload_id: str, start: int, end: int) -> AsyncIterator[bytes]:
        if start >= end:
            return
        with missing_as_contract(f"upload {upload_id}"):
            answer = await (await self._s3()).get_object(
                Bucket=self.bucket, Key=self._key(upload_id), Range=f"bytes={start}-{end - 1}"
            )
        async with answer["Body"] as body:
            while block := await body.read(MiB):
                yield block

    async def concatenate(self, upload_id: str, part_ids: Sequence[str]) -> None:
        if await s3_concat.concatenate_placed(self, upload_id, part_ids):
            return
        sizes = []
        for part in part_ids:
            size = await self._object_size(self._key(part))
            if size is None:
                # An upload created empty is complete at once and never finished: it has a
                # state holding nothing and no object. Anything else is truly missing.
                state = await self._load_state(part)
                if state is None or state.held:
                    raise StoredBytesMissing(f"partial upload {part} is not in the store")
                size = 0
            sizes.append(size)
        await self._discard_progress(upload_id)
        await copy_together(
            self,
            [(self._key(part), size) for part, size in zip(part_ids, sizes, strict=True)],
            self._key(upload_id),
        )

    async def share(self, source_id: str, upload_id: str) -> bool:
        size = await self._object_size(self._key(source_id))
        if size is None:
            return False
        await self._discard_progress(upload_id)
        await copy_together(self, [(self._key(source_id), size)], self._key(upload_id))
        return True

    async def _discard_progress(self, upload_id: str) -> None:
        """Forget an unfinished multipart upload (and its tail) of ``upload_id``."""
        state = await self._load_state(upload_id)
        if state is None:
            return
        s3 = await self._s3()
        # Best effort: a refused abort (a policy without s3:AbortMultipartUpload, a store
        # briefly failing, or aborted already) must not stop a delete, a concatenation or the
        # collector; the store's lifecycle rules drop incomplete multipart uploads.
        with contextlib.suppress(ClientError):
            await s3.abort_multipart_upload(
                Bucket=self.bucket, Key=self._key(upload_id), UploadId=state.mpu
            )
        await self._forget_state(upload_id, state)

    async def delete(self, upload_id: str) -> None:
        await self._discard_progress(upload_id)
        await self._delete_key(self._key(upload_id))

    async def stored_ids(self) -> AsyncIterator[tuple[str, float]]:
        s3 = await self._s3()
        latest: dict[str, float] = {}
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for item in page.get("Contents", []):
                # <prefix>[<storage key>/]<id>[.state | .tail.<n>]
                folder, _, last = item["Key"][len(self.prefix) :].rpartition("/")
                if _ID.fullmatch(last[:32]):
                    name = f"{folder}/{last[:32]}" if folder else last[:32]
                    stamp = item["LastModified"].timestamp()
                    latest[name] = max(latest.get(name, 0.0), stamp)
        for upload_id, stamp in latest.items():
            yield upload_id, stamp

    # -- direct (presigned) uploads -------------------------------------------------------

    async def multipart_id(self, upload_id: str) -> str | None:
        # Fixed for an upload's life: read once, not for every part a direct upload signs.
        if upload_id not in self._mpus:
            if (state := await self._load_state(upload_id)) is None:
                return None
            if len(self._mpus) >= MPU_CACHE:
                del self._mpus[next(iter(self._mpus))]  # the oldest
            self._mpus[upload_id] = state.mpu
        return self._mpus[upload_id]

    async def presign_part(
        self, upload_id: str, part_number: int, ttl: int, *, md5: str | None = None
    ) -> str:
        mpu = await self.multipart_id(upload_id)
        params: dict[str, object] = {
            "Bucket": self.bucket, "Key": self._key(upload_id), "UploadId": mpu,
            "PartNumber": part_number,
        }  # fmt: skip
        if md5 is not None:  # signed: the PUT must carry it, and the store checks the bytes
            params["ContentMD5"] = md5
        url = await (await self._s3()).generate_presigned_url(
            "upload_part", Params=params, ExpiresIn=ttl
        )
        return str(url)

    async def list_parts(self, upload_id: str) -> list[dict[str, object]]:
        mpu = await self.multipart_id(upload_id)
        parts: list[dict[str, object]] = []
        paginator = (await self._s3()).get_paginator("list_parts")
        async for page in paginator.paginate(
            Bucket=self.bucket, Key=self._key(upload_id), UploadId=mpu
        ):
            parts += [
                {"PartNumber": p["PartNumber"], "Size": p["Size"], "ETag": p["ETag"]}
                for p in page.get("Parts", [])
            ]
        return parts

    async def complete_parts(self, upload_id: str, parts: Sequence[tuple[int, str]]) -> int:
        key, mpu = self._key(upload_id), await self.multipart_id(upload_id)
        try:
            listed = await self.list_parts(upload_id) if mpu else []
        except ClientError as exc:
            if not is_missing(exc):
                raise
            listed = []  # ended meanwhile, by another node
        received = {int(str(p["PartNumber"])): p for p in listed}
        if not received or not parts:
            raise BadRequest(f"upload {upload_id} has no parts to complete, or none were named")
        size = 0
        for number, etag in parts:
            got = received.get(number)
            if got is None or str(got["ETag"]).strip('"') != etag.strip('"'):
                raise BadRequest(f"part {number} with ETag {etag} was not received by the store")
            size += int(str(got["Size"]))
        chosen = [{"PartNumber": n, "ETag": str(received[n]["ETag"])} for n, _ in parts]
        await (await self._s3()).complete_multipart_upload(
            Bucket=self.bucket, Key=key, UploadId=mpu, MultipartUpload={"Parts": chosen}
        )
        self._mpus.pop(upload_id, None)
        _, stored = await asyncio.gather(self._delete_key(key + ".state"), self._object_size(key))
        if stored != size:  # what the store holds is the truth
            raise BadRequest(f"the store holds {stored} bytes, the parts add up to {size}")
        return size
