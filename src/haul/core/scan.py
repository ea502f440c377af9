"""A deeper look at each upload before it is declared complete: an external command (a virus
scanner, a format validator) reads the bytes on stdin and says yes (exit 0) or no."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
from collections.abc import AsyncIterator
from typing import Protocol

from haul.core.models import Upload
from haul.wire.http import safe_filename


class Scanner(Protocol):
    async def scan(self, upload: Upload, content: AsyncIterator[bytes]) -> str | None:
        """None when the content may be served; otherwise why not, in words."""
        ...


class CommandScanner:
    def __init__(self, command: str, timeout: float) -> None:
        self.argv = shlex.split(command)
        self.timeout = timeout

    async def scan(self, upload: Upload, content: AsyncIterator[bytes]) -> str | None:
        name = upload.text_metadata("filename", "name") or upload.id
        env = {
            **os.environ,
            "HAUL_UPLOAD_ID": upload.id,
            "HAUL_FILENAME": safe_filename(name),
            "HAUL_LENGTH": str(upload.length or 0),
        }
        process = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
        try:
            async with asyncio.timeout(self.timeout):
                output, _ = await asyncio.gather(process.stdout.read(), _feed(process, content))  # type: ignore[union-attr]
                code = await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            return f"the scan did not finish within {self.timeout:g} s"
        if code == 0:
            return None
        said = output.decode("utf-8", "replace").strip().splitlines()
        summary = "".join(ch for ch in (said[0] if said else "") if ch.isprintable())[:200]
        return summary or f"the scanner exited with status {code}"


async def _feed(process: asyncio.subprocess.Process, content: AsyncIterator[bytes]) -> None:
    """Writes the content to the scanner's stdin; a scanner may stop reading early."""
    stdin = process.stdin
    assert stdin is not None
    try:
        async for block in content:
            stdin.write(block)
            await stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        return
    finally:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            stdin.close()
