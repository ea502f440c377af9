"""The public client: ``haul.AsyncClient`` and its synchronous twin ``haul.Client``."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import httpx

from haul.client.direct import DirectUpload
from haul.client.errors import HaulClientError, ServerRejected, reported_as_client_errors
from haul.client.headers import decode_metadata, header_int
from haul.client.ietf import IetfUpload
from haul.client.retry import RetryPolicy
from haul.client.session import Session, failure, transport_failure
from haul.client.state import StateStore
from haul.client.upload import (
    FileUpload,
    Progress,
    ProgressCallback,
    UploadOptions,
    UploadResult,
)

T = TypeVar("T")
DOWNLOAD_BLOCK = 1 << 20


@dataclass(frozen=True)
class UploadStatus:
    url: str
    offset: int | None  # None for a final upload still waiting for its partials
    length: int | None  # None while deferred
    metadata: dict[str, str]
    expires: str | None

    @property
    def complete(self) -> bool:
        return self.length is not None and self.offset == self.length


def endpoint_for(base_url: str) -> str:
    """``http://host:8080`` → ``http://host:8080/files/``; a URL with a path is used as is."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise HaulClientError(f"not an http(s) URL: {base_url!r}")
    if parts.path in ("", "/"):
        return base_url.rstrip("/") + "/files/"
    return base_url if base_url.endswith("/") else base_url + "/"


class AsyncClient:
    """Upload, download, inspect and delete uploads on any tus 1.0.0 server.

    ``parallel`` streams are used when the server offers concatenation; ``chunk_size`` (bytes)
    adapts to the file when not given. A failed request is tried ``retries`` times in all, with
    exponential backoff capped at ``max_backoff`` seconds; ``timeout`` is how long a connection
    may make no progress. Resume state lives in ``state_dir``. Every failure is raised as a
    :class:`HaulClientError` (ServerRejected with the server's code and message for a refusal).
    """

    def __init__(
        self,
        base_url: str,
        *,
        parallel: int = 4,
        chunk_size: int | None = None,
        retries: int = 10,
        max_backoff: float = 15.0,
        timeout: float = 60.0,
        state_dir: Path | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        ca_file: str | Path | None = None,
    ) -> None:
        self.endpoint = endpoint_for(base_url)
        # A private CA's certificate for servers (and object stores) it signed; else the
        # usual public ones.
        self._verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
        )
        if token:  # an API key or JWT, for servers that require credentials
            headers = {**(headers or {}), "Authorization": f"Bearer {token}"}
        self.parallel = parallel
        self.chunk_size = chunk_size
        self.state = StateStore(state_dir)
        # read/write timeouts catch a stalled connection; no timeout on the whole request,
        # which may legitimately take hours.
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 15.0), pool=None),
            limits=httpx.Limits(max_connections=max(parallel, 1) * 2 + 2),
            headers=headers,
            transport=transport,
            verify=self._verify,
            trust_env=False,
        )
        policy = RetryPolicy(attempts=max(1, retries), max_delay=max_backoff)
        self._session = Session(self._http, policy)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def upload(
        self,
        path: str | Path,
        *,
        parallel: int | None = None,
        chunk_size: int | None = None,
        metadata: dict[str, str] | None = None,
        on_progress: ProgressCallback | None = None,
        resume: bool = True,
        dedup: bool = True,
    ) -> UploadResult:
        """Upload one file and return where it went.

        Sending starts at once while the file is hashed alongside; the digest is declared and
        verified whatever ``dedup`` says. With ``dedup`` (the default), once the hash is ready
        a server that already holds the content completes the upload then and there
        (``instant``) and the rest of the bytes stay home."""
        options = UploadOptions(
            parallel=self.parallel if parallel is None else parallel,
            chunk_size=chunk_size or self.chunk_size,
            metadata=dict(metadata or {}),
            resume=resume,
            dedup=dedup,
        )
        job = FileUpload(self._session, self.endpoint, Path(path), options, self.state, on_progress)
        with reported_as_client_errors(f"upload of {path}"):
            return await job.run()

    async def upload_ietf(
        self,
        path: str | Path,
        *,
        version: int | None = None,
        chunk_size: int | None = None,
        metadata: dict[str, str] | None = None,
        on_progress: ProgressCallback | None = None,
        resume: bool = True,
    ) -> UploadResult:
        """Upload one file over IETF "Resumable Uploads for HTTP" (client.ietf), in interop
        ``version``, or the newest one the server offers. Appends are ``chunk_size`` bytes
        (default: the whole rest in one request); a rerun after an interruption resumes."""
        job = IetfUpload(
            self._session, self.endpoint, Path(path), version=version, state=self.state,
            chunk_size=chunk_size or self.chunk_size, metadata=metadata, resume=resume,
            on_progress=on_progress,
        )  # fmt: skip
        with reported_as_client_errors(f"upload of {path}"):
            return await job.run()

    async def upload_direct(
        self,
        path: str | Path,
        *,
        parallel: int | None = None,
        chunk_size: int | None = None,
        on_progress: ProgressCallback | None = None,
        resume: bool = True,
    ) -> UploadResult:
        """Upload one file straight to the server's object store, through part URLs the
        server presigns (needs a haul server with --storage s3). With ``resume``, a rerun
        after an interruption sends only the parts the store does not hold yet."""
        with reported_as_client_errors(f"direct upload of {path}"):
            job = DirectUpload(
                self._session, self.endpoint, Path(path),
                parallel=self.parallel if parallel is None else parallel,
                chunk_size=chunk_size or self.chunk_size, on_progress=on_progress,
                state=self.state if resume else None, verify=self._verify,
            )  # fmt: skip
            return await job.run()

    async def status(self, url: str) -> UploadStatus:
        with reported_as_client_errors(f"status of {url}"):
            response = await self._session.request("HEAD", url)
            headers = response.headers
            return UploadStatus(
                url=url,
                offset=header_int(response, "upload-offset"),
                length=header_int(response, "upload-length"),
                metadata=decode_metadata(headers.get("upload-metadata", "")),
                expires=headers.get("upload-expires"),
            )

    async def delete(self, url: str) -> None:
        with reported_as_client_errors(f"deletion of {url}"):
            await self._session.request("DELETE", url, ok=(204,))

    async def uploads(
        self, *, state: str | None = None, since: str | None = None, page: int = 100
    ) -> AsyncIterator[dict[str, Any]]:
        """The caller's uploads on the server (GET /api/uploads), oldest first, page by page:
        ``state`` is active or complete, ``since`` an RFC 3339 time."""
        url = urljoin(self.endpoint, "/api/uploads")
        params = {"limit": str(page)}
        if state:
            params["state"] = state
        if since:
            params["since"] = since
        while True:
            with reported_as_client_errors("listing of uploads"):
                answer = await self._session.request("GET", url, params=params, ok=(200,))
                try:
                    body = answer.json()
                    items, following = list(body["uploads"]), body["next"]
                except (ValueError, KeyError, TypeError):
                    raise HaulClientError(
                        f"{url} answered something that is no upload list"
                    ) from None
            for item in items:
                yield item
            if not following:
                return
            params["cursor"] = str(following)

    async def download(
        self, url: str, destination: str | Path, *, on_progress: ProgressCallback | None = None
    ) -> Path:
        """Download to ``destination``, resuming a previous partial download with Range.

        Bytes go to ``<destination>.part`` (with the ETag beside it) and are renamed into place
        once complete, so a half-downloaded file never looks finished. Each retry continues
        from what the part file holds."""
        target = Path(destination)
        partial = target.with_name(target.name + ".part")
        tag_file = target.with_name(target.name + ".part.json")

        async def attempt() -> None:
            have = partial.stat().st_size if partial.exists() else 0
            etag = _saved_etag(tag_file)
            headers = {"Range": f"bytes={have}-", "If-Range": etag} if have and etag else {}
            try:
                async with self._http.stream("GET", url, headers=headers) as response:
                    if response.status_code == 416 and have:
                        return  # we already hold every byte
                    if response.status_code not in (200, 206):
                        await response.aread()
                        raise failure(response)
                    mode = "ab" if response.status_code == 206 else "wb"
                    total = (header_int(response, "content-length") or 0) + (
                        have if mode == "ab" else 0
                    )
                    tag_file.write_text(json.dumps({"etag": response.headers.get("etag")}))
                    done = have if mode == "ab" else 0
                    with open(partial, mode) as out:
                        async for block in response.aiter_bytes(DOWNLOAD_BLOCK):
                            await asyncio.to_thread(out.write, block)
                            done += len(block)
                            if on_progress:
                                on_progress(Progress(target, done, total))
            except httpx.HTTPError as exc:
                raise transport_failure(exc) from exc

        with reported_as_client_errors(f"download of {url}"):
            await self._session.policy.run(attempt, what=f"download of {url}")
            partial.replace(target)
            tag_file.unlink(missing_ok=True)
        return target


def _saved_etag(tag_file: Path) -> str | None:
    """The ETag a partial download was started with; None if unknown (start over)."""
    try:
        etag = json.loads(tag_file.read_text()).get("etag")
    except (OSError, ValueError, AttributeError):
        return None
    return etag if isinstance(etag, str) else None


class Client:
    """Synchronous twin of :class:`AsyncClient` (same arguments, same methods)."""

    def __init__(self, base_url: str, **options: object) -> None:
        self._base_url = base_url
        self._options = options
        AsyncClient(base_url, **options)  # type: ignore[arg-type]  # validate early

    def _run(self, call: Callable[[AsyncClient], Awaitable[T]]) -> T:
        async def go() -> T:
            async with AsyncClient(self._base_url, **self._options) as client:  # type: ignore[arg-type]
                return await call(client)

        return asyncio.run(go())

    def upload(self, path: str | Path, **options: object) -> UploadResult:
        return self._run(lambda c: c.upload(path, **options))  # type: ignore[arg-type]

    def upload_ietf(self, path: str | Path, **options: object) -> UploadResult:
        return self._run(lambda c: c.upload_ietf(path, **options))  # type: ignore[arg-type]

    def upload_direct(self, path: str | Path, **options: object) -> UploadResult:
        return self._run(lambda c: c.upload_direct(path, **options))  # type: ignore[arg-type]

    def status(self, url: str) -> UploadStatus:
        return self._run(lambda c: c.status(url))

    def uploads(
        self, *, state: str | None = None, since: str | None = None
    ) -> list[dict[str, Any]]:
        async def listed(client: AsyncClient) -> list[dict[str, Any]]:
            return [item async for item in client.uploads(state=state, since=since)]

        return self._run(listed)

    def delete(self, url: str) -> None:
        self._run(lambda c: c.delete(url))

    def download(self, url: str, destination: str | Path, **options: object) -> Path:
        return self._run(lambda c: c.download(url, destination, **options))  # type: ignore[arg-type]


__all__ = ["AsyncClient", "Client", "ServerRejected", "UploadResult", "UploadStatus"]
