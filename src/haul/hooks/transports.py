"""How an event reaches the application: one POST to a URL (signed with the hook secret), or
one run of a command with the event on stdin. Neither raises: an event that could not be told
comes back as an answer that is not ``ok``, with the reason in words."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Protocol

from haul.hooks.http_client import HookClient


@dataclass(frozen=True)
class Answer:
    ok: bool  # a 2xx answer, or exit status 0
    body: bytes = b""  # what the application said back (JSON, or nothing)
    detail: str = ""  # why it is not ok, for the logs


class Transport(Protocol):
    concurrency: int  # events it sends at once; more wait their turn

    async def send(self, event_id: str, body: bytes) -> Answer: ...

    async def close(self) -> None: ...


def signature(secret: str, body: bytes) -> str:
    """``Haul-Signature``: the HMAC-SHA256 of the raw body, keyed with the hook secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class HttpTransport:
    def __init__(self, url: str, secret: str, timeout: float) -> None:
        self.url = url
        self.secret = secret
        self.timeout = timeout
        self.concurrency = 16
        self.client = HookClient(url, timeout, connections=self.concurrency)

    async def send(self, event_id: str, body: bytes) -> Answer:
        headers = {"Content-Type": "application/json", "Haul-Event-Id": event_id}
        if self.secret:
            headers["Haul-Signature"] = signature(self.secret, body)
        try:
            status, answer = await self.client.post(body, headers)
        except TimeoutError:
            return Answer(False, detail=f"the hook did not answer within {self.timeout} s")
        except (OSError, EOFError, ValueError) as failed:
            return Answer(False, detail=f"the hook could not be reached: {failed!r}")
        if 200 <= status < 300:
            return Answer(True, answer)
        return Answer(False, answer, f"the hook answered {status}")

    async def close(self) -> None:
        await self.client.close()


class CommandTransport:
    def __init__(self, command: str, timeout: float, at_once: int = 8) -> None:
        self.command = command
        self.timeout = timeout
        self.concurrency = at_once
        self._slots = asyncio.Semaphore(at_once)  # processes running at a time

    async def send(self, event_id: str, body: bytes) -> Answer:
        async with self._slots:
            return await self._run(event_id, body)

    async def _run(self, event_id: str, body: bytes) -> Answer:
        try:
            process = await asyncio.create_subprocess_shell(
                self.command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                env={**os.environ, "HAUL_EVENT_ID": event_id},
            )
        except OSError as failed:
            return Answer(False, detail=f"the hook command could not start: {failed}")
        try:
            out, _ = await asyncio.wait_for(process.communicate(body), self.timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            return Answer(False, detail=f"the hook command took longer than {self.timeout} s")
        if process.returncode != 0:
            return Answer(False, out, f"the hook command exited with {process.returncode}")
        return Answer(True, out)

    async def close(self) -> None:
        """Nothing kept between runs."""
