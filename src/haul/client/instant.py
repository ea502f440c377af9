"""The whole file's SHA-256, and what it is for: the instant upload of content the server
already holds, and the end-to-end check of what it stored.

The hash runs in a thread of its own, reading the file on its own descriptor, while the bytes
are already on their way: reading and hashing outrun any network, so it is ready long before
the transfer ends. Only then is the instant-upload check made; if the server holds the content,
the transfer is stopped and its partly sent uploads removed."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from haul.client.errors import HaulClientError, ServerRejected
from haul.client.headers import format_repr_digest, header_int, reported_sha256
from haul.client.transfer import OCTETS, Transfer
from haul.wire.possession import Challenge, answer

HASH_BLOCK = 4 << 20


class WholeFileHash:
    """The SHA-256 of ``size`` bytes of ``path``, computed in a thread as soon as it is made."""

    def __init__(self, path: Path, size: int) -> None:
        self._stop = threading.Event()
        self.task = asyncio.ensure_future(asyncio.to_thread(self._compute, path, size))

    def _compute(self, path: Path, size: int) -> str:
        digest = hashlib.sha256()
        buffer = bytearray(HASH_BLOCK)
        view = memoryview(buffer)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            position = 0
            while position < size:
                if self._stop.is_set():  # the upload ended without it (an error, or cancelled)
                    raise HaulClientError(f"hashing {path} was stopped")
                wanted = min(HASH_BLOCK, size - position)
                got = os.preadv(fd, [view[:wanted]], position)
                if got == 0:
                    raise HaulClientError(f"{path} changed while it was being uploaded")
                digest.update(view[:got])  # hashlib releases the GIL on large buffers
                position += got
        finally:
            os.close(fd)
        return digest.hexdigest()

    async def result(self) -> str:
        return await asyncio.shield(self.task)

    async def stop(self) -> None:
        """Stop the thread and wait for it (it must not outlive the upload)."""
        self._stop.set()
        with contextlib.suppress(Exception):
            await self.task


async def probe(transfer: Transfer, digest: str) -> str | None:
    """Create an upload declaring the digest: a server that already holds the content answers
    with a complete upload (instant upload), whose URL is returned. Otherwise the probe is
    removed, and the transfer under way goes on."""
    extra = {"Repr-Digest": format_repr_digest(digest)}
    try:
        url, answer = await transfer.create(
            transfer.size, transfer.metadata(), partial=False, extra=extra
        )
    except ServerRejected:
        return None  # a refusal the transfer will meet, and report, itself
    offset = header_int(answer, "upload-offset") or 0
    challenge = answer.headers.get("haul-challenge")
    if offset != transfer.size and challenge is not None:
        offset = await prove(transfer, url, challenge)
    if offset == transfer.size:
        return url
    with contextlib.suppress(HaulClientError):
        await transfer.session.request("DELETE", url, ok=(204,))
    return None


async def prove(transfer: Transfer, url: str, header: str) -> int:
    """Answer the server's proof-of-possession challenge; returns the upload's offset."""
    try:
        challenge = Challenge.parse_header(header)
        blocks = [await transfer.read(first, last - first + 1) for first, last in challenge.ranges]
    except (ValueError, HaulClientError):
        return 0  # a challenge we cannot answer: send the bytes instead
    proof = base64.b64encode(answer(challenge.nonce, blocks)).decode()
    headers = {"Upload-Offset": "0", "Content-Type": OCTETS, "Haul-Proof": proof}
    try:
        response = await transfer.session.request("PATCH", url, headers=headers, ok=(204,))
    except ServerRejected:
        return 0
    return header_int(response, "upload-offset") or 0


async def confirm(transfer: Transfer, url: str, digest: str) -> bool:
    """End-to-end check: a server that reports the digest of what it stored (haul does, as
    Repr-Digest) must report ours. True when the server is still verifying it (see
    :func:`reported_digest`)."""
    stored, pending = await reported_digest(lambda: transfer.session.request("HEAD", url))
    # None: a server that does not say; per-request checksums guarded the transfer.
    if stored is not None and stored != digest:
        raise HaulClientError(
            f"the server stored sha-256 {stored} for {transfer.path}, which hashes to {digest}"
        )
    return pending


async def reported_digest(
    head: Callable[[], Awaitable[httpx.Response]],
) -> tuple[str | None, bool]:
    """The SHA-256 the server reports for what it stored, and whether it is still verifying
    the declared one in the background (``Haul-Digest-Pending: ?1``, no Repr-Digest yet: the
    upload is complete, its digest is checked at the store's read speed without the client
    waiting, and a mismatch fails the upload then)."""
    response = await head()
    stored = reported_sha256(response.headers.get("repr-digest"))
    return stored, stored is None and response.headers.get("haul-digest-pending") == "?1"


async def discard(transfer: Transfer, urls: list[str]) -> None:
    """Remove uploads this run no longer needs (best effort: they expire anyway)."""

    async def delete(url: str) -> None:
        with contextlib.suppress(HaulClientError):
            await transfer.session.request("DELETE", url, ok=(204, 404, 410))

    await asyncio.gather(*(delete(url) for url in urls))
