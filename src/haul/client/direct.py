"""``haul upload --direct``: parts go straight to the object store through URLs the haul
server presigns (the /s3/multipart contract), so the bytes never pass through haul. The
server checks the store's list of parts and the file's SHA-256 before it calls it complete.
A rerun after an interruption asks the server which parts the store holds and sends the rest."""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import os
import ssl
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from haul.client.errors import HaulClientError, RetriesExhausted, ServerRejected
from haul.client.state import FileIdentity, StateStore, UploadEntry
from haul.client.upload import Progress, ProgressCallback, UploadResult, choose_chunk_size
from haul.wire.digest import parse_repr_digest

ATTEMPTS = 5


class DirectUpload:
    def __init__(
        self,
        http: httpx.AsyncClient,
        endpoint: str,
        path: Path,
        *,
        parallel: int,
        chunk_size: int | None,
        on_progress: ProgressCallback | None,
        state: StateStore | None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.http = http
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

    async def _api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A call to haul's /s3/multipart API, tried again on network errors, 429 and 5xx."""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                response = await self.http.request(method, self.api + path, **kwargs)
            except httpx.TransportError as exc:
                if attempt == ATTEMPTS:
                    raise RetriesExhausted(f"{method} {self.api}{path}: {exc}") from exc
            else:
                if response.status_code < 400:
                    return response
                retry = response.status_code == 429 or response.status_code >= 500
                if not retry or attempt == ATTEMPTS:
                    code, _, message = response.text.strip().partition(": ")
                    if not code.startswith("ERR_"):
                        code, message = "", response.text.strip()
                    raise ServerRejected(response.status_code, code, message)
            await asyncio.sleep(min(10, 0.5 * 2**attempt))
        raise AssertionError("unreachable")

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
            timeout=self.http.timeout, verify=self.verify, trust_env=False
        )
        try:

            async def worker() -> None:
                for number in numbers:
                    start = (number - 1) * self.chunk
                    data = await asyncio.to_thread(os.pread, fd, self._length(number), start)
                    etags[number] = await self._send_part(key, upload_id, number, data)
                    self.sent += len(data)
                    if self.on_progress is not None:
                        self.on_progress(Progress(self.path, done_before + self.sent, self.size))

            await asyncio.gather(*(worker() for _ in range(min(self.parallel, count))))
        except BaseException:
            if self.state is None:  # nothing will resume it: free the store's space now
                await self.http.delete(f"{self.api}/{upload_id}", params={"key": key})
            digest_pass.cancel()
            raise
        finally:
            os.close(fd)
            await self.store.aclose()
        parts = [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]
        complete = {"parts": parts}
        answer = await self._api(
            "POST", f"/{upload_id}/complete", params={"key": key}, json=complete
        )
        done = answer.json()
        sha256 = await digest_pass
        head = await self.http.head(done["location"], headers={"Tus-Resumable": "1.0.0"})
        reported = head.headers.get("repr-digest", "")
        stored = parse_repr_digest(reported).get("sha-256") if reported else None
        if stored is not None and stored.hex() != sha256:
            raise HaulClientError(f"the server stored sha-256 {stored.hex()}, the file is {sha256}")
        if self.state is not None:
            self.state.remove(state_key)
        return UploadResult(url=done["location"], path=self.path, size=self.size, sha256=sha256,
                            parallel=self.parallel, resumed=resumed, sent=self.sent,
                            elapsed=time.monotonic() - started)  # fmt: skip

    def _count(self) -> int:
        return max(1, -(-self.size // self.chunk))

    def _length(self, number: int) -> int:
        return min(self.chunk, self.size - (number - 1) * self.chunk)

    async def _start(self, identity: FileIdentity) -> UploadEntry:
        kind = mimetypes.guess_type(self.path.name)[0] or "application/octet-stream"
        created = (
            await self._api("POST", "", json={"filename": self.path.name, "type": kind})
        ).json()
        return UploadEntry(self.api, identity, self.chunk, [], True,
                           multipart=[created["key"], created["uploadId"]])  # fmt: skip

    async def _stored_parts(self, entry: UploadEntry) -> dict[int, str] | None:
        """The ETags of the parts an earlier run stored, by part number; None when that
        multipart upload is gone (finished, aborted or expired). A part of the wrong size is
        sent again; its content is checked with the whole file's SHA-256 at the end."""
        if entry.multipart is None:
            return None
        key, upload_id = entry.multipart
        try:
            listed = (await self._api("GET", f"/{upload_id}", params={"key": key})).json()
        except ServerRejected as exc:
            if exc.status in (404, 410):
                return None
            raise
        self.chunk = entry.chunk_size  # the parts are cut as that run cut them
        stored: dict[int, str] = {}
        for part in listed:
            number = part.get("PartNumber")
            known = isinstance(number, int) and 1 <= number <= self._count()
            if known and part.get("Size") == self._length(number) and part.get("ETag"):
                stored[number] = str(part["ETag"])
        return stored

    async def _send_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        for attempt in range(1, ATTEMPTS + 1):
            signed = (await self._api("GET", f"/{upload_id}/{number}", params={"key": key})).json()
            try:
                answer = await self.store.put(signed["url"], content=data)
            except httpx.TransportError:
                answer = None
            if answer is not None and answer.status_code == 200 and answer.headers.get("etag"):
                return str(answer.headers["etag"])
            if attempt == ATTEMPTS:
                status = answer.status_code if answer is not None else "no answer"
                raise HaulClientError(f"the store refused part {number}: {status}")
            await asyncio.sleep(min(10, 0.5 * 2**attempt))
        raise AssertionError("unreachable")

    def _sha256(self) -> str:
        digest = hashlib.sha256()
        with open(self.path, "rb") as handle:
            while block := handle.read(8 << 20):
                digest.update(block)
        return digest.hexdigest()
