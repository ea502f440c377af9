"""A parallel upload: each chunk of the file a partial upload, up to ``parallel`` of them on the
wire at once, joined by a final upload (concatenation) that declares the file's digest."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import urljoin

from haul.client.errors import UploadGone
from haul.client.headers import encode_metadata, format_repr_digest, required_header
from haul.client.session import Capabilities
from haul.client.state import UploadEntry
from haul.client.transfer import Rewind, Transfer


async def send_parallel(
    transfer: Transfer,
    key: str,
    entry: UploadEntry,
    caps: Capabilities,
    parallel: int,
    digest_ready: Callable[[], Awaitable[str]],
) -> str:
    """Send every chunk not yet on the server, then create the final upload; its URL."""
    size = entry.identity.size
    chunk = entry.chunk_size
    count = len(entry.parts)
    offsets = [0] * count
    limit = asyncio.Semaphore(parallel * 2)

    async def probe(index: int, url: str) -> None:
        async with limit:
            try:
                offsets[index], _ = await transfer.session.offset(url)
            except UploadGone:
                entry.parts[index] = None

    await asyncio.gather(*(probe(i, u) for i, u in enumerate(entry.parts) if u is not None))
    algorithm = caps.checksum_algorithm()
    indexes = iter(range(count))
    # Each partial says where it belongs, so the server can hash the file while it arrives.
    group = secrets.token_urlsafe(12)

    async def worker() -> None:
        for index in indexes:
            start = index * chunk
            length = min(chunk, size - start)
            if entry.parts[index] is not None and offsets[index] >= length:
                transfer.report(index, length)
                continue  # already on the server: not even read
            data = await transfer.read(start, length)
            url = entry.parts[index]
            if url is None:
                tag = encode_metadata({"haul-part": f"{group} {index}".encode()})
                url, _ = await transfer.create(len(data), tag, partial=True)
                entry.parts[index] = url
                transfer.began.set()
                await transfer.save(key, entry)
                offsets[index] = 0
            try:
                await transfer.send(url, 0, data, offsets[index], index, algorithm)
            except Rewind as rewind:
                offsets[index] = rewind.offset
                await transfer.send(url, 0, data, rewind.offset, index, algorithm)

    tasks = [asyncio.create_task(worker()) for _ in range(min(parallel, count))]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    parts = " ".join(transfer.same_origin_path(u) for u in entry.parts if u is not None)
    whole = await digest_ready()
    headers = {"Upload-Concat": f"final;{parts}", "Repr-Digest": format_repr_digest(whole)}
    metadata = transfer.metadata()
    if metadata:
        headers["Upload-Metadata"] = metadata
    response = await transfer.session.request("POST", transfer.endpoint, headers=headers, ok=(201,))
    return urljoin(transfer.endpoint, required_header(response, "location"))
