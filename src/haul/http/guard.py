"""Abuse limits per client: requests in flight at once, and a request rate (token bucket).
A client is its IP address (the first X-Forwarded-For hop with --trust-proxy); an
authenticated owner has a rate of its own as well (see TusEndpoint)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from haul.errors import RateLimited
from haul.http.logs import tag


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class TokenBuckets:
    """``rate`` requests a second per key, in bursts of up to ``burst``."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.buckets: dict[str, _Bucket] = {}

    def take(self, key: str, now: float | None = None) -> None:
        """Spend one token of ``key``; raise RateLimited (with the wait) when there is none."""
        now = time.monotonic() if now is None else now
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) > 50_000:
                self._forget_full(now)
            bucket = self.buckets[key] = _Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        if bucket.tokens < 1:
            wait = (1 - bucket.tokens) / self.rate
            raise RateLimited(
                f"too many requests; at most {self.rate:g} a second (bursts of {self.burst})",
                retry_after=wait,
            )
        bucket.tokens -= 1

    def _forget_full(self, now: float) -> None:
        """Keys whose bucket refilled carry no state worth keeping: memory stays bounded."""
        full = [
            k
            for k, b in self.buckets.items()
            if b.tokens + (now - b.stamp) * self.rate >= self.burst
        ]
        for key in full:
            del self.buckets[key]


def client_address(scope: Scope, trust_proxy: bool) -> str:
    if trust_proxy:
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                return str(value.decode("latin-1").split(",")[0].strip())
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class ClientGuard:
    """Refuses, with 429 and Retry-After, a client's requests beyond ``max_in_flight`` at once
    or beyond its rate; others are not slowed by it."""

    def __init__(
        self, app: ASGIApp, *, max_in_flight: int, rate: float, burst: int, trust_proxy: bool
    ) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.rates = TokenBuckets(rate, burst) if rate else None
        self.trust_proxy = trust_proxy
        self.in_flight: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/healthz":  # load balancers probe often
            await self.app(scope, receive, send)
            return
        client = client_address(scope, self.trust_proxy)
        try:
            if self.max_in_flight and self.in_flight[client] >= self.max_in_flight:
                raise RateLimited(
                    f"too many requests at once from {client}; at most {self.max_in_flight}",
                    retry_after=1,
                )
            if self.rates is not None:
                self.rates.take(client)
        except RateLimited as limited:
            tag(error_code=limited.code)
            response = PlainTextResponse(limited.render(), 429, headers=limited.headers)
            await response(scope, receive, send)
            return
        self.in_flight[client] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight[client] -= 1
            if not self.in_flight[client]:
                del self.in_flight[client]
