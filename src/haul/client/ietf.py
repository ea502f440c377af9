"""Uploading one file over IETF "Resumable Uploads for HTTP" (draft-ietf-httpbis-resumable-upload),
the second way ``haul upload`` sends (``--protocol ietf``), beside tus.

The version: the newest interop version both sides speak. haul's server lists the ones it
offers in ``Upload-Draft-Interop-Versions`` on its OPTIONS answer (the drafts define no
discovery); ``--protocol ietf-N`` names one, for servers that list nothing.

The steps are the draft's "careful upload creation": the whole file is hashed first, an empty
creation (``Upload-Complete: ?0``) declares the length and the whole-file ``Repr-Digest`` and
gives the upload's URL, which is saved at once (client.state) so a rerun resumes. The bytes go
in appends; after any failure (network, 5xx, 409, ...) the offset is retrieved with HEAD and
the next attempt sends from there, under the client's one retry policy (client.retry). Once
complete, the digest the server reports must be the file's.
"""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import urljoin

import httpx

from haul.client.errors import HaulClientError, NotSupported, ServerRejected
from haul.client.headers import (
    encode_metadata,
    format_repr_digest,
    header_int,
    required_header,
)
from haul.client.instant import reported_digest
from haul.client.retry import Transient
from haul.client.session import Session, failure, transport_failure
from haul.client.state import FileIdentity, StateStore, UploadEntry
from haul.client.upload import Progress, ProgressCallback, UploadResult
from haul.wire import ietf
from haul.wire.http import content_disposition

SEND_SLICE = 256 * 1024
HASH_BLOCK = 8 << 20
PROTOCOLS = ("tus", "ietf", *(f"ietf-{v}" for v in ietf.VERSIONS))


def pinned_version(protocol: str) -> int | None:
    """The interop version ``ietf-N`` names; None for ``ietf`` (the newest both speak)."""
    if protocol == "ietf":
        return None
    number = protocol.removeprefix("ietf-")
    if protocol not in PROTOCOLS or protocol == "tus":
        raise ValueError(f"{protocol!r} is not one of {', '.join(PROTOCOLS)}")
    return int(number)


def parse_limits(value: str | None) -> dict[str, int]:
    """``Upload-Limit`` as a reader of someone else's answer makes it out: integer members
    kept, anything else left out (a client never fails over a limit it cannot read)."""
    found: dict[str, int] = {}
    for member in (value or "").split(","):
        key, _, item = member.strip().partition("=")
        item = item.split(";", 1)[0].strip()
        if key and item.isdigit():
            found[key] = int(item)
    return found


def said_complete(draft: ietf.Draft, response: httpx.Response) -> bool | None:
    """Whether the answer says the upload is complete; None when it says nothing."""
    value = response.headers.get(draft.complete_field, "").split(";", 1)[0].strip()
    if value not in ("?0", "?1"):
        return None
    return (value == "?1") is (draft.version >= 4)


def _saved_version(entry: UploadEntry | None) -> int | None:
    """The interop version a saved upload was created with; None for none (or a tus one)."""
    number = entry.protocol.removeprefix("ietf-") if entry is not None else ""
    if not number.isdigit() or int(number) not in ietf.VERSIONS:
        return None
    return int(number)


class IetfUpload:
    def __init__(
        self,
        session: Session,
        endpoint: str,
        path: Path,
        *,
        version: int | None,
        state: StateStore,
        chunk_size: int | None = None,
        metadata: dict[str, str] | None = None,
        resume: bool = True,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.session = session
        self.endpoint = endpoint
        self.path = path
        self.version = version
        self.state = state
        self.chunk_size = chunk_size
        self.metadata = dict(metadata or {})
        self.resume = resume
        self.on_progress = on_progress
        self.sent_bytes = 0
        self._fd = -1
        self._size = 0

    # -- entry point ----------------------------------------------------------------------

    async def run(self) -> UploadResult:
        started = time.monotonic()
        identity = await asyncio.to_thread(FileIdentity.of, self.path)
        size = self._size = identity.size
        key = identity.key(f"ietf {self.endpoint}")
        entry = self.state.load(key) if self.resume else None
        # An upload goes on in the version it was created with.
        saved = _saved_version(entry)
        if saved is None:
            entry = None
        version = saved if saved is not None else await self._choose()
        draft = ietf.Draft(version)
        limits = await self._limits(draft)
        if "max-size" in limits and size > limits["max-size"]:
            raise NotSupported(
                f"{self.path} is {size} bytes; the server takes at most {limits['max-size']}"
            )
        self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            digest = await self._hash()
            url, offset, complete = None, 0, False
            if entry is not None and entry.parts[0] is not None:
                url = entry.parts[0]
                try:
                    offset, complete = await self._retrieve(draft, url)
                except ServerRejected:  # gone (expired, deleted) or no longer ours: afresh
                    url = None
            resumed, instant = url is not None, False
            if url is None:
                url, complete = await self._create(draft, digest)
                instant = complete and size > 0  # the server had the content (dedup)
                offset = 0
                entry = UploadEntry(self.endpoint, identity, self.chunk_size or 0, [url],
                                    False, protocol=f"ietf-{version}")  # fmt: skip
                await asyncio.to_thread(self.state.save, key, entry)
            if not complete:
                await self._append(draft, url, offset, limits)
        finally:
            os.close(self._fd)
        pending = await self._confirm(draft, url, digest)
        self.state.remove(key)
        return UploadResult(
            url=url, path=self.path, size=size, sha256=digest, parallel=1, resumed=resumed,
            sent=self.sent_bytes, elapsed=time.monotonic() - started, instant=instant,
            digest_pending=pending,
        )  # fmt: skip

    # -- the steps ------------------------------------------------------------------------

    async def _choose(self) -> int:
        """The interop version to speak: the pinned one, else the newest the server offers."""
        spoken = ", ".join(map(str, ietf.VERSIONS))
        if self.version is not None and self.version not in ietf.VERSIONS:
            raise NotSupported(f"haul speaks IETF interop versions {spoken}, not {self.version}")
        try:
            answer = await self.session.request("OPTIONS", self.endpoint, ok=(200, 204))
        except ServerRejected as exc:
            if self.version is not None:
                return self.version  # it may still speak the draft (tusd answers no OPTIONS)
            raise NotSupported(
                f"{self.endpoint} answered OPTIONS with HTTP {exc.status}; it does not say it "
                "speaks IETF resumable uploads"
            ) from exc
        offered = ietf.parse_integer_list(answer.headers.get(ietf.VERSIONS_HEADER, ""))
        if self.version is not None:
            if offered and self.version not in offered:
                raise NotSupported(
                    f"{self.endpoint} offers IETF interop versions "
                    f"{', '.join(map(str, offered))}, not {self.version}"
                )
            return self.version
        common = set(offered) & set(ietf.VERSIONS)
        if not common:
            said = ", ".join(map(str, offered)) if offered else "none"
            raise NotSupported(
                f"{self.endpoint} offers no IETF resumable upload version haul speaks ({spoken}): "
                f"its OPTIONS answer lists {said} in {ietf.VERSIONS_HEADER}; name one with "
                "--protocol ietf-N to try it anyway"
            )
        return max(common)

    async def _limits(self, draft: ietf.Draft) -> dict[str, int]:
        """What the server limits, from its OPTIONS answer (draft-05 on); {} when unsaid."""
        if not draft.limits:
            return {}
        try:
            answer = await self._request(draft, "OPTIONS", self.endpoint, {}, ok=(200, 204))
        except ServerRejected:
            return {}
        return parse_limits(answer.headers.get("upload-limit"))

    async def _create(self, draft: ietf.Draft, digest: str) -> tuple[str, bool]:
        """An upload resource for the file, with no bytes yet (an empty file: complete at
        once); its URL, and whether it is complete."""
        empty = self._size == 0
        headers = {
            draft.complete_field: draft.complete_value(empty),
            "Repr-Digest": format_repr_digest(digest),
            "Content-Disposition": content_disposition(self.metadata.get("filename")
                                                       or self.path.name),
        }  # fmt: skip
        headers["Content-Length"] = "0"  # careful creation: the bytes follow in appends
        if draft.upload_length:
            headers["Upload-Length"] = str(self._size)
        guessed, _ = mimetypes.guess_type(self.path.name)
        if guessed:
            headers["Content-Type"] = guessed
        # Retries of this POST carry the same key: a lost answer costs no second upload.
        headers["Idempotency-Key"] = f'"{secrets.token_urlsafe(18)}"'
        extra = {k: v.encode() for k, v in self.metadata.items() if k != "filename"}
        if extra:  # as tus-js-client sends it; haul keeps it as the upload's metadata
            headers["Upload-Metadata"] = encode_metadata(extra)
        answer = await self.session.policy.run(
            lambda: self._request(draft, "POST", self.endpoint, headers, ok=(200, 201, 204)),
            what=f"POST {self.endpoint}",
        )
        url = urljoin(self.endpoint, required_header(answer, "location"))
        return url, bool(said_complete(draft, answer)) or empty

    async def _retrieve(self, draft: ietf.Draft, url: str) -> tuple[int, bool]:
        """(offset, complete) as the upload resource says now (offset retrieval, HEAD)."""
        answer = await self.session.policy.run(
            lambda: self._request(draft, "HEAD", url, {}, ok=(200, 204)), what=f"HEAD {url}"
        )
        offset = header_int(answer, "upload-offset")
        if offset is None:
            raise HaulClientError(f"the server's answer to HEAD {url} lacks Upload-Offset")
        if offset > self._size:
            raise HaulClientError(
                f"{url} holds {offset} bytes, more than {self.path} has ({self._size})"
            )
        return offset, bool(said_complete(draft, answer))

    async def _append(
        self, draft: ietf.Draft, url: str, offset: int, limits: dict[str, int]
    ) -> None:
        """The rest of the file from ``offset``: appends of at most ``chunk_size`` bytes (the
        whole rest by default), within the server's append limits, the last one completing
        the upload. After a failed attempt the offset is retrieved again."""
        size = self._size
        step = self.chunk_size or size or 1
        step = min(step, limits.get("max-append-size", step))
        step = max(step, limits.get("min-append-size", 0), 1)
        at, complete = offset, False

        async def attempt() -> tuple[int, bool]:
            end = min(size, at + step)
            last = end == size
            headers = {
                "Upload-Offset": str(at),
                draft.complete_field: draft.complete_value(last),
                "Content-Length": str(end - at),
            }
            if draft.partial_upload_type:
                headers["Content-Type"] = ietf.PARTIAL_UPLOAD_TYPE
            self._report(at)
            answer = await self._request(
                draft, "PATCH", url, headers, body=self._body(at, end), ok=(200, 201, 204)
            )
            reached = header_int(answer, "upload-offset")
            reached = end if reached is None else reached  # the draft makes it optional
            if reached <= at < end:  # it would be sent again and again
                raise HaulClientError(f"PATCH {url} was accepted but left the offset at {at}")
            done = said_complete(draft, answer)
            return reached, last if done is None else done

        async def resync(failed: Transient) -> None:
            nonlocal at, complete
            at, complete = await self._retrieve(draft, url)

        while not complete:
            at, complete = await self.session.policy.run(
                attempt, what=f"PATCH {url}", between=resync
            )
        self._report(size)

    async def _confirm(self, draft: ietf.Draft, url: str, digest: str) -> bool:
        """End-to-end check: the digest the server reports for what it stored (RFC 9530
        Repr-Digest; haul reports it) must be the file's. A server that reports none has had
        the declared digest to check itself. True while the server verifies it later."""

        def head() -> Awaitable[httpx.Response]:
            return self.session.policy.run(
                lambda: self._request(draft, "HEAD", url, {}, ok=(200, 204)), what=f"HEAD {url}"
            )

        stored, pending = await reported_digest(head)
        if stored is not None and stored != digest:
            raise HaulClientError(
                f"the server stored sha-256 {stored} for {self.path}, which hashes to {digest}"
            )
        return pending

    # -- helpers --------------------------------------------------------------------------

    async def _request(
        self, draft: ietf.Draft, method: str, url: str, headers: dict[str, str], *,
        ok: tuple[int, ...], body: Callable[[], AsyncIterator[bytes]] | None = None,
    ) -> httpx.Response:  # fmt: skip
        """One attempt in the draft's terms (no tus header: a server serving both tells them
        apart by it): the answer if ``ok``; Transient if another attempt may help."""
        headers = {ietf.INTEROP_HEADER: str(draft.version), **headers}
        try:
            answer = await self.session.http.request(
                method, url, headers=headers, content=body() if body is not None else None
            )
        except httpx.HTTPError as exc:
            raise transport_failure(exc) from exc
        if answer.status_code in ok:
            return answer
        raise failure(answer)

    def _body(self, start: int, end: int) -> Callable[[], AsyncIterator[bytes]]:
        async def stream() -> AsyncIterator[bytes]:
            at = start
            while at < end:
                block = await self._read(at, min(SEND_SLICE, end - at))
                yield block
                at += len(block)
                self.sent_bytes += len(block)
                self._report(at)

        return stream

    async def _hash(self) -> str:
        digest = hashlib.sha256()
        position = 0
        while position < self._size:
            block = await self._read(position, min(HASH_BLOCK, self._size - position))
            await asyncio.to_thread(digest.update, block)
            position += len(block)
            if self.on_progress is not None:
                self.on_progress(Progress(self.path, position, self._size, "hashing"))
        return digest.hexdigest()

    async def _read(self, offset: int, length: int) -> bytes:
        data = await asyncio.to_thread(os.pread, self._fd, length, offset)
        if len(data) != length:
            raise HaulClientError(f"{self.path} changed while it was being uploaded")
        return data

    def _report(self, sent: int) -> None:
        if self.on_progress is not None:
            self.on_progress(Progress(self.path, sent, self._size))
