"""A parallel upload: the file cut into partial uploads (one per stream unless asked
otherwise), up to ``parallel`` of them on the wire at once, each sent as a sequential upload
is (PATCHes streamed from the file), joined by a final upload (concatenation).

Where the server takes a final upload before its partials are complete
(``concatenation-unfinished``), the plan is: every partial created with its length, then the
final, and only then the bytes. A server that knows the whole layout before the first byte can
write each partial in place, as a piece of the final object (on S3: parts of one multipart
upload), instead of copying everything once more at the end. The file's digest, ready long
before the last byte, is declared to the final with an empty PATCH (haul's servers verify it
at assembly). A server without that extension gets the final after the partials, with the
digest in its creation.

The saved state holds every partial's URL and the final's: a resumed run continues the partials
and makes no second final."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import urljoin

from haul.client.errors import ServerRejected, UploadGone
from haul.client.headers import (
    encode_metadata,
    format_repr_digest,
    header_int,
    required_header,
)
from haul.client.session import Capabilities
from haul.client.state import UploadEntry
from haul.client.tasks import all_or_none
from haul.client.transfer import OCTETS, REQUEST, FileRange, Rewind, Transfer

DigestReady = Callable[[], Awaitable[str]]


class ParallelUpload:
    def __init__(
        self, transfer: Transfer, key: str, entry: UploadEntry, caps: Capabilities, parallel: int
    ) -> None:
        self.t = transfer
        self.key = key
        self.entry = entry
        self.algorithm = caps.checksum_algorithm()
        self.final_first = "concatenation-unfinished" in caps.extensions
        self.parallel = parallel
        self.offsets = [0] * len(entry.parts)
        self.first: dict[int, FileRange] = {}  # prepared first requests, see run()
        self.limit = asyncio.Semaphore(parallel * 2)  # requests that carry no body
        # Each partial says where it belongs, so the server can hash the file while it arrives.
        self.group = secrets.token_urlsafe(12)

    def length(self, index: int) -> int:
        chunk = self.entry.chunk_size
        return min(chunk, self.entry.identity.size - index * chunk)

    async def run(self, digest_ready: DigestReady) -> str:
        """Send every chunk not yet on the server and see the final upload made; its URL."""
        entry = self.entry
        if entry.final is not None and await self._final_complete(entry.final):
            await self._declare(entry.final, digest_ready)
            return entry.final
        missing = await self._probe_all()
        if not self.final_first:
            await self._send_all()
            return await self._create_final(await digest_ready())
        if missing and entry.final is not None:
            # The final names a partial that is gone: it can never be assembled. A server that
            # wrote partials in place ends them with it (their bytes were the final's): ask.
            await self._delete(entry.final)
            entry.final = None
            missing = await self._probe_all()
        self._prepare_first()
        try:
            await self._each(lambda index: self._create_partial(index, save=False), missing)
            if entry.final is None:
                entry.final = await self._create_final(None)  # saves the partials' URLs too
            declaring = asyncio.create_task(self._declare(entry.final, digest_ready))
            try:
                await self._send_all()
                await declaring
            finally:
                if not declaring.done():
                    declaring.cancel()
                    await asyncio.gather(declaring, return_exceptions=True)
        finally:
            for unused in self.first.values():
                unused.cancel()
        # The last partial's completion assembles the final; asking for it waits for that.
        await self.t.session.offset(entry.final)
        return entry.final

    def _prepare_first(self) -> None:
        """Have the first requests' checksums computed while the uploads are created."""
        for index in range(min(self.parallel, len(self.entry.parts))):
            if self.offsets[index] < self.length(index):
                self.first[index] = self.t.request_range(
                    index * self.entry.chunk_size, self.offsets[index], self.length(index),
                    REQUEST, self.algorithm,
                )  # fmt: skip

    async def _each(self, job: Callable[[int], Awaitable[None]], indexes: list[int]) -> None:
        async def limited(index: int) -> None:
            async with self.limit:
                await job(index)

        await asyncio.gather(*(limited(i) for i in indexes))

    async def _probe_all(self) -> list[int]:
        """Ask the server for every known partial's offset; the indexes with none on it."""
        await self._each(self._probe, [i for i, u in enumerate(self.entry.parts) if u is not None])
        return [i for i, u in enumerate(self.entry.parts) if u is None]

    async def _probe(self, index: int) -> None:
        url = self.entry.parts[index]
        assert url is not None
        try:
            self.offsets[index], _ = await self.t.session.offset(url)
        except UploadGone:
            self.entry.parts[index] = None

    async def _final_complete(self, url: str) -> bool:
        """Whether the saved final is already assembled; one that is gone is forgotten."""
        try:
            response = await self.t.session.request("HEAD", url)
        except UploadGone:
            self.entry.final = None
            return False
        return header_int(response, "upload-offset") is not None

    async def _create_partial(self, index: int, *, save: bool = True) -> None:
        tag = encode_metadata({"haul-part": f"{self.group} {index}".encode()})
        url, _ = await self.t.create(self.length(index), tag, partial=True)
        self.entry.parts[index] = url
        self.offsets[index] = 0
        if save:
            await self.t.save(self.key, self.entry)

    async def _create_final(self, digest: str | None) -> str:
        parts = " ".join(self.t.same_origin_path(u) for u in self.entry.parts if u is not None)
        headers = {"Upload-Concat": f"final;{parts}"}
        if digest is not None:
            headers["Repr-Digest"] = format_repr_digest(digest)
        metadata = self.t.metadata()
        if metadata:
            headers["Upload-Metadata"] = metadata
        response = await self.t.session.request("POST", self.t.endpoint, headers=headers, ok=(201,))
        url = urljoin(self.t.endpoint, required_header(response, "location"))
        self.entry.final = url
        await self.t.save(self.key, self.entry)
        return url

    async def _declare(self, url: str, digest_ready: DigestReady) -> None:
        """Declare the file's digest to a final created before it was known: the server
        verifies the assembled bytes against it (or, assembled already, the bytes it hashed)."""
        digest = await digest_ready()
        headers = {"Content-Type": OCTETS, "Content-Length": "0",
                   "Repr-Digest": format_repr_digest(digest)}  # fmt: skip

        async def offset(_: object = None) -> None:
            # None until it is assembled; the assembly may finish between HEAD and PATCH (409),
            # so the offset is asked again before each retry.
            response = await self.t.session.request("HEAD", url)
            headers["Upload-Offset"] = str(header_int(response, "upload-offset") or 0)

        await offset()
        try:
            await self.t.session.request("PATCH", url, headers=headers, ok=(204,), between=offset)
        except ServerRejected as refused:
            if refused.code != "ERR_MODIFY_FINAL":
                raise
            # A server that takes no declaration: the end-to-end check after the upload
            # still compares the digest it reports with ours.

    async def _send_all(self) -> None:
        indexes = iter(range(len(self.entry.parts)))

        async def worker() -> None:
            for index in indexes:
                await self._send_one(index)

        await all_or_none(*(worker() for _ in range(min(self.parallel, len(self.entry.parts)))))

    async def _send_one(self, index: int) -> None:
        length = self.length(index)
        base = index * self.entry.chunk_size
        url = self.entry.parts[index]
        if url is not None and self.offsets[index] >= length:
            self.t.report(base, length)
            return  # already on the server: not even read
        if url is None:  # created as it goes (a server that takes the final last)
            await self._create_partial(index)
            url = self.entry.parts[index]
            assert url is not None
        while True:
            try:
                first = self.first.pop(index, None)
                await self.t.send_file(url, base, self.offsets[index], length, self.algorithm,
                                       REQUEST, first=first)  # fmt: skip
                return
            except Rewind as rewind:
                self.offsets[index] = rewind.offset

    async def _delete(self, url: str) -> None:
        # Gone already, or no longer ours to remove: a new final replaces it either way.
        with contextlib.suppress(UploadGone, ServerRejected):
            await self.t.session.request("DELETE", url, ok=(204,))


async def send_parallel(
    transfer: Transfer,
    key: str,
    entry: UploadEntry,
    caps: Capabilities,
    parallel: int,
    digest_ready: DigestReady,
) -> str:
    return await ParallelUpload(transfer, key, entry, caps, parallel).run(digest_ready)
