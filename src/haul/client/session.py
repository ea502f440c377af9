"""HTTP with the tus conventions and a retry policy (backoff with jitter, Retry-After)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx

from haul.client.errors import RetriesExhausted, ServerRejected, UploadGone

TUS = {"Tus-Resumable": "1.0.0"}
# Worth another try: the server or the path to it may recover (460: bytes damaged in transit).
# 409/423 need a fresh HEAD first,
# which the upload loop does.
RETRYABLE = frozenset({408, 409, 423, 425, 429, 460, 500, 502, 503, 504, 507})


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 10
    base_delay: float = 0.5
    max_delay: float = 15.0

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        if retry_after and retry_after.isdigit():
            return min(float(retry_after), self.max_delay)
        return float(min(self.max_delay, self.base_delay * 2**attempt) * random.uniform(0.5, 1.0))


@dataclass(frozen=True)
class Capabilities:
    extensions: frozenset[str]
    checksum_algorithms: tuple[str, ...]
    max_size: int | None

    def checksum_algorithm(self) -> str | None:
        """The cheapest algorithm both sides know (it guards the transfer, not identity)."""
        if "checksum" not in self.extensions:
            return None
        for name in ("crc32", "sha1", "md5", "sha256"):
            if name in self.checksum_algorithms:
                return name
        return None


class Transient(Exception):
    """A failure worth retrying (network error, timeout, 5xx, 409, 423, ...)."""

    def __init__(self, reason: str, retry_after: str | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def rejection(response: httpx.Response) -> ServerRejected:
    text = response.text.strip()
    code, sep, message = text.partition(": ")
    if not (sep and code.startswith("ERR_")):
        code, message = "", text or response.reason_phrase
    return ServerRejected(response.status_code, code, message)


BodyFactory = Callable[[], AsyncIterator[bytes]] | None


class Session:
    def __init__(self, http: httpx.AsyncClient, policy: RetryPolicy) -> None:
        self.http = http
        self.policy = policy

    async def once(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        body: BodyFactory = None,
        ok: tuple[int, ...] = (200, 201, 204),
    ) -> httpx.Response:
        """One attempt: the response if its status is ``ok``; Transient if retrying may help;
        UploadGone for 404/410; ServerRejected for any other refusal."""
        try:
            response = await self.http.request(
                method, url, headers={**TUS, **(headers or {})},
                content=body() if body is not None else None,
            )  # fmt: skip
        except httpx.TransportError as exc:
            raise Transient(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code in ok:
            return response
        if response.status_code in RETRYABLE:
            raise Transient(
                f"HTTP {response.status_code}: {response.text.strip()[:200]}",
                response.headers.get("retry-after"),
            )
        if response.status_code in (404, 410):
            raise UploadGone(f"{url} is gone ({response.status_code})")
        raise rejection(response)

    async def request(self, method: str, url: str, **kwargs: object) -> httpx.Response:
        """``once`` with retries; raises RetriesExhausted when the budget is spent."""
        last: Transient | None = None
        for attempt in range(self.policy.attempts):
            try:
                return await self.once(method, url, **kwargs)  # type: ignore[arg-type]
            except Transient as exc:
                last = exc
                await asyncio.sleep(self.policy.delay(attempt, exc.retry_after))
        raise RetriesExhausted(f"{method} {url} failed {self.policy.attempts} times: {last}")

    async def capabilities(self, endpoint: str) -> Capabilities:
        response = await self.request("OPTIONS", endpoint)
        headers = response.headers
        max_size = headers.get("tus-max-size")
        return Capabilities(
            extensions=frozenset(
                e.strip() for e in headers.get("tus-extension", "").split(",") if e.strip()
            ),
            checksum_algorithms=tuple(
                a.strip().lower()
                for a in headers.get("tus-checksum-algorithm", "").split(",")
                if a.strip()
            ),
            max_size=int(max_size) if max_size and max_size.isdigit() else None,
        )

    async def offset(self, url: str) -> tuple[int, int | None]:
        """(Upload-Offset, Upload-Length) as the server sees them now."""
        response = await self.request("HEAD", url)
        length = response.headers.get("upload-length")
        return int(response.headers["upload-offset"]), int(length) if length else None
