"""``haul upload --direct``: parts go straight to the object store through URLs the haul
server presigns (the /s3/multipart contract), so the bytes never pass through haul. The
server checks the store's list of parts and the file's SHA-256 before it calls it complete."""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from haul.client.errors import HaulClientError, ServerRejected
from haul.client.upload import Progress, ProgressCallback, UploadResult, choose_chunk_size
from haul.protocol.digest import parse_repr_digest

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
        self.sent = 0

    async def _api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await self.http.request(method, self.api + path, **kwargs)
        if response.status_code >= 400:
            code, _, message = response.text.strip().partition(": ")
            if not code.startswith("ERR_"):
                code, message = "", response.text.strip()
            raise ServerRejected(response.status_code, code, message)
        return response

    async def run(self) -> UploadResult:
        started = time.monotonic()
        kind = mimetypes.guess_type(self.path.name)[0] or "application/octet-stream"
        created = (
            await self._api("POST", "", json={"filename": self.path.name, "type": kind})
        ).json()
        key, upload_id = created["key"], created["uploadId"]
        count = max(1, -(-self.size // self.chunk))
        etags: dict[int, str] = {}
        numbers = iter(range(1, count + 1))
        digest_pass = asyncio.create_task(asyncio.to_thread(self._sha256))
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        # The store gets no credentials of ours: each URL carries its own signature.
        self.store = httpx.AsyncClient(timeout=self.http.timeout, trust_env=False)
        try:

            async def worker() -> None:
                for number in numbers:
                    start = (number - 1) * self.chunk
                    length = min(self.chunk, self.size - start)
                    data = await asyncio.to_thread(os.pread, fd, length, start)
                    etags[number] = await self._send_part(key, upload_id, number, data)
                    self.sent += len(data)
                    if self.on_progress is not None:
                        self.on_progress(Progress(self.path, self.sent, self.size))

            await asyncio.gather(*(worker() for _ in range(min(self.parallel, count))))
        except BaseException:
            await self.http.delete(f"{self.api}/{upload_id}", params={"key": key})
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
        return UploadResult(url=done["location"], path=self.path, size=self.size, sha256=sha256,
                            parallel=self.parallel, resumed=False, sent=self.sent,
                            elapsed=time.monotonic() - started)  # fmt: skip

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
