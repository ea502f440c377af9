"""``haul upload --direct``: parts go straight to the object store through URLs the haul
server presigns (the /s3/multipart contract), so the bytes never pass through haul. The
server checks the store's list of parts before it calls it complete; each part carries its
MD5, which the store checks, and the completion declares the file's SHA-256, which the server
verifies (in the background on an object store, without the client waiting for a read-back).
A rerun after an interruption asks the server which parts the store holds and sends the rest."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import mimetypes
import os
import ssl
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from haul.client.errors import HaulClientError, NotSupported, UploadGone
from haul.client.instant import reported_digest
from haul.client.retry import Transient
from haul.client.session import Session, transport_failure
from haul.client.state import FileIdentity, StateStore, UploadEntry
from haul.client.tasks import all_or_none
from haul.client.upload import Progress, ProgressCallback, UploadResult, choose_chunk_size

PREPARED = 32 << 20  # bytes of parts read, hashed and signed ahead of the senders


class DirectUpload:
    def __init__(
        self,
        session: Session,
        endpoint: str,
        path: Path,
        *,
        parallel: int,
        chunk_size: int | None,
        on_progress: ProgressCallback | None,
        state: StateStore | None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.session = session
        root = urlsplit(endpoint)
        self.api = f"{root.scheme}://{root.netloc}/s3/multipart"
        self.path = path
        self.parallel = max(1, parallel)
        self.size = path.stat().st_size
        # S3 parts: at least 5 MiB but the last; chunk sizes of 8 MiB and up satisfy that.
        self.chunk = choose_chunk_size(self.size, chunk_size)
        self.on_progress = on_progress
        self.state = state  # None: no resuming, and an interrupted upload is aborted
        self.verify = verify
        self.sent = 0

    async def _api(self, method: str, path: str, **kwargs: Any) -> Any:
        """A call to haul's /s3/multipart API under the client's retry policy; its JSON."""
        response = await self.session.request(method, self.api + path, ok=(200, 201), **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise HaulClientError(f"{method} {self.api}{path} answered no JSON: {exc}") from exc

    async def run(self) -> UploadResult:
        started = time.monotonic()
        identity = await asyncio.to_thread(FileIdentity.of, self.path)
        state_key = identity.key(self.api)
        entry = self.state.load(state_key) if self.state is not None else None
        etags = await self._stored_parts(entry) if entry is not None else None
        resumed = entry is not None and etags is not None
        if entry is None or etags is None:
            entry, etags = await self._start(identity), {}
            if self.state is not None:
                self.state.save(state_key, entry)
        assert entry.multipart is not None
        key, upload_id = entry.multipart
        count = self._count()
        numbers = iter([n for n in range(1, count + 1) if n not in etags])
        done_before = sum(self._length(n) for n in etags)
        digest_pass = asyncio.create_task(asyncio.to_thread(self._sha256))
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        # The store gets no credentials of ours: each URL carries its own signature.
        self.store = httpx.AsyncClient(
            timeout=self.session.http.timeout, verify=self.verify, trust_env=False
        )
        # Parts are read, hashed and signed ahead (two at a time, so that MD5s use both cores
        # and signing round trips overlap) while up to `parallel` are on their way to the
        # store: a sender never waits for its next part. At most PREPARED bytes wait ready.
        senders = min(self.parallel, count)
        preparers = max(1, min(2, senders, PREPARED // self.chunk))
        ready: asyncio.Queue[tuple[int, bytes, str, Any] | None] = asyncio.Queue(preparers)
        try:

            async def prepare() -> None:
                for number in numbers:
                    start = (number - 1) * self.chunk
                    data, md5 = await asyncio.to_thread(_read_part, fd, self._length(number), start)
                    signed = await self._sign(key, upload_id, number, md5)
                    await ready.put((number, data, md5, signed))

            async def prepare_all() -> None:
                await all_or_none(*(prepare() for _ in range(preparers)))
                for _ in range(senders):
                    await ready.put(None)

            async def send() -> None:
                while (part := await ready.get()) is not None:
                    number, data, md5, signed = part
                    etags[number] = await self._send_part(key, upload_id, number, data, md5, signed)
                    self.sent += len(data)
                    if self.on_progress is not None:
                        self.on_progress(Progress(self.path, done_before + self.sent, self.size))

            await all_or_none(prepare_all(), *(send() for _ in range(senders)))
        except BaseException:
            if self.state is None:  # nothing will resume it: free the store's space now
                with contextlib.suppress(HaulClientError, Transient):
                    await self.session.once(
                        "DELETE", f"{self.api}/{upload_id}", params={"key": key}
                    )
            digest_pass.cancel()
            raise
        finally:
            os.close(fd)
            await self.store.aclose()
        parts = [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]
        sha256 = await digest_pass  # ran alongside the parts; declared for the server to verify
        complete = {"parts": parts, "sha256": sha256}
        done = await self._api("POST", f"/{upload_id}/complete", params={"key": key}, json=complete)
        location = _field(done, "location", str)
        # An object store's server verifies the declared digest in the background (pending).
        stored, pending = await reported_digest(lambda: self.session.request("HEAD", location))
        if stored is not None and stored != sha256:
            raise HaulClientError(f"the server stored sha-256 {stored}, the file is {sha256}")
        if self.state is not None:
            self.state.remove(state_key)
        return UploadResult(url=location, path=self.path, size=self.size, sha256=sha256,
                            parallel=self.parallel, resumed=resumed, sent=self.sent,
                            elapsed=time.monotonic() - started,
                            digest_pending=pending)  # fmt: skip

    def _count(self) -> int:
        return max(1, -(-self.size // self.chunk))

    def _length(self, number: int) -> int:
        return min(self.chunk, self.size - (number - 1) * self.chunk)

    async def _start(self, identity: FileIdentity) -> UploadEntry:
        kind = mimetypes.guess_type(self.path.name)[0] or "application/octet-stream"
        try:
            created = await self._api("POST", "", json={"filename": self.path.name, "type": kind})
        except UploadGone as exc:  # no such resource: a server without an object store
            raise NotSupported(
                f"the server offers no direct upload at {self.api} (a haul server offers it "
                f"with --storage s3): {exc}"
            ) from exc
        multipart = [_field(created, "key", str), _field(created, "uploadId", str)]
        return UploadEntry(self.api, identity, self.chunk, [], True, multipart=multipart)

    async def _stored_parts(self, entry: UploadEntry) -> dict[int, str] | None:
        """The ETags of the parts an earlier run stored, by part number; None when that
        multipart upload is gone (finished, aborted or expired). A part of the wrong size is
        sent again; its content is checked with the whole file's SHA-256 at the end."""
        if entry.multipart is None:
            return None
        key, upload_id = entry.multipart
        try:
            listed = await self._api("GET", f"/{upload_id}", params={"key": key})
        except UploadGone:
            return None
        if not isinstance(listed, list):
            raise HaulClientError(f"the server listed the stored parts as {listed!r}")
        self.chunk = entry.chunk_size  # the parts are cut as that run cut them
        stored: dict[int, str] = {}
        for part in listed:
            number = part.get("PartNumber") if isinstance(part, dict) else None
            if not (isinstance(number, int) and 1 <= number <= self._count()):
                continue
            if part.get("Size") == self._length(number) and part.get("ETag"):
                stored[number] = str(part["ETag"])
        return stored

    async def _sign(self, key: str, upload_id: str, number: int, md5: str) -> Any:
        """The server's presigned PUT of one part, bound to the part's MD5."""
        return await self._api("GET", f"/{upload_id}/{number}", params={"key": key, "md5": md5})

    async def _send_part(
        self, key: str, upload_id: str, number: int, data: bytes, md5: str, signed: Any
    ) -> str:
        """PUT one part to the store with the part's MD5, which the store checks the bytes
        against; the part's ETag. The first attempt uses ``signed``, each later one a URL
        signed afresh (so an expired or refused signature is no reason to give up)."""
        first = [signed]

        async def attempt() -> str:
            signed = first.pop() if first else await self._sign(key, upload_id, number, md5)
            headers = signed.get("headers") if isinstance(signed, dict) else None
            if not isinstance(headers, dict) or headers.get("Content-MD5") != md5:
                raise HaulClientError("the server signed the part without its Content-MD5")
            try:
                url = _field(signed, "url", str)
                answer = await self.store.put(url, content=data, headers=headers)
            except httpx.HTTPError as exc:
                raise transport_failure(exc) from exc
            etag = answer.headers.get("etag")
            if answer.status_code != 200 or not etag:
                raise Transient(f"the store answered {answer.status_code}: {answer.text[:200]}")
            return str(etag)

        return await self.session.policy.run(attempt, what=f"PUT of part {number} to the store")

    def _sha256(self) -> str:
        digest = hashlib.sha256()
        with open(self.path, "rb") as handle:
            while block := handle.read(8 << 20):
                digest.update(block)
        return digest.hexdigest()


def _read_part(fd: int, length: int, start: int) -> tuple[bytes, str]:
    """One part's bytes and their MD5 as Content-MD5 wants it (base64)."""
    data = os.pread(fd, length, start)
    return data, base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324


def _field(answer: Any, name: str, kind: type[str]) -> str:
    """One field of the API's JSON answer, checked, so a malformed answer is a clear error."""
    value = answer.get(name) if isinstance(answer, dict) else None
    if not isinstance(value, kind):
        raise HaulClientError(f"the server's answer {answer!r} lacks {name}")
    return value
