"""Per-upload locks as ``flock`` on files under ``<data dir>/locks``.

``flock`` belongs to the open file description, so it excludes other requests in the same
process as well as other processes sharing the data dir, and the kernel drops it when a holder
dies: a crashed server never leaves an upload locked.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from haul.errors import Locked

POLL = 0.02


class FileLocker:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    @asynccontextmanager
    async def lock(self, upload_id: str, timeout: float) -> AsyncIterator[None]:
        fd = os.open(self.root / f"{upload_id}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise Locked(
                            f"upload {upload_id} is busy with another request; retry shortly",
                            headers={"Retry-After": "1"},
                        ) from None
                    await asyncio.sleep(POLL)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    async def forget(self, upload_id: str) -> None:
        # Only called once the upload's record is gone, so a request still waiting on the old
        # inode finds nothing to act on.
        (self.root / f"{upload_id}.lock").unlink(missing_ok=True)

    async def close(self) -> None:
        """Nothing to release: each lock closes its own file."""
