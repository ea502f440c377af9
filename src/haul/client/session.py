"""HTTP with the tus conventions: one attempt classified (done, worth retrying, refused), and
every request under the client's one retry policy."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx

from haul.client.errors import HaulClientError, ServerRejected, UploadGone
from haul.client.headers import header_int, required_int
from haul.client.retry import Between, RetryPolicy, Transient, is_transient, retry_after_seconds

TUS = {"Tus-Resumable": "1.0.0"}


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


def rejection(response: httpx.Response) -> ServerRejected:
    """The server's refusal with its own code and message (haul answers ``CODE: message``);
    UploadGone for 404 and 410."""
    text = response.text.strip()
    code, sep, message = text.partition(": ")
    if not (sep and code.startswith("ERR_")):
        code, message = "", text[:500] or response.reason_phrase
    kind = UploadGone if response.status_code in (404, 410) else ServerRejected
    return kind(response.status_code, code, message)


def failure(response: httpx.Response) -> Transient | ServerRejected:
    """What an answer that is not a success means: Transient if the same request may succeed
    later (with the server's Retry-After), else the server's refusal."""
    refused = rejection(response)
    if is_transient(response.status_code):
        return Transient(str(refused), retry_after_seconds(response.headers.get("retry-after")))
    return refused


def transport_failure(exc: httpx.HTTPError) -> Transient | HaulClientError:
    """A request that got no usable answer: the network (refused, reset, timed out) may
    recover; anything else httpx raises would fail the same way again."""
    if isinstance(exc, httpx.TransportError):
        return Transient(f"{type(exc).__name__}: {exc}".rstrip(": "))
    return HaulClientError(f"{type(exc).__name__}: {exc}")


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
        json: object = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One attempt: the response if its status is ``ok``; Transient if retrying may help;
        UploadGone for 404/410; ServerRejected for any other refusal."""
        try:
            response = await self.http.request(
                method, url, headers={**TUS, **(headers or {})},
                content=body() if body is not None else None, json=json, params=params,
            )  # fmt: skip
        except httpx.HTTPError as exc:
            raise transport_failure(exc) from exc
        if response.status_code in ok:
            return response
        if method == "HEAD" and not is_transient(response.status_code):
            response = await self._with_reason(url, response)
        raise failure(response)

    async def _with_reason(self, url: str, refused: httpx.Response) -> httpx.Response:
        """A refused HEAD has no body, so no message: the same URL asked with a one-byte GET
        answers the same refusal with the server's words. The HEAD's answer stands if it does
        not."""
        headers = {**TUS, "Range": "bytes=0-0"}
        try:
            async with self.http.stream("GET", url, headers=headers) as response:
                if response.status_code != refused.status_code:
                    return refused
                await response.aread()
                return response
        except httpx.HTTPError:
            return refused

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        body: BodyFactory = None,
        ok: tuple[int, ...] = (200, 201, 204),
        json: object = None,
        params: dict[str, str] | None = None,
        between: Between | None = None,
    ) -> httpx.Response:
        """``once`` under the retry policy; RetriesExhausted when the budget is spent."""

        async def attempt() -> httpx.Response:
            return await self.once(
                method, url, headers=headers, body=body, ok=ok, json=json, params=params
            )

        return await self.policy.run(attempt, what=f"{method} {url}", between=between)

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
        return required_int(response, "upload-offset"), header_int(response, "upload-length")
