"""Prometheus metrics: what the server did, for the operator's dashboards. Counted from the
core's events and from the requests that pass; the exposition is prometheus-client's own.

Each app has a registry of its own (not the library's global one), so several apps in one
process (tests, embedding) never count into each other."""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from haul.core import events
from haul.core.interfaces import MetadataStore, Outbox
from haul.core.models import ConcatKind, Upload

_METHODS = frozenset({"GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS", "PUT"})
# Storage calls range from a stat (microseconds) to completing a multipart upload (seconds).
_STORAGE_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


Handler = Callable[[Request], Awaitable[Response]]


def _kind(upload: Upload) -> str:
    if upload.concat is ConcatKind.PARTIAL:
        return "partial"
    return "final" if upload.concat is ConcatKind.FINAL else "single"


class Metrics:
    def __init__(self, storage_backend: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.backend = storage_backend
        r = self.registry
        self.created = Counter(
            "haul_uploads_created", "Uploads created, by kind.", ["kind"], registry=r
        )
        self.completed = Counter(
            "haul_uploads_completed",
            "Uploads completed and verified, by kind.", ["kind"],
            registry=r,
        )  # fmt: skip
        self.failed = Counter(
            "haul_uploads_failed", "Uploads refused and discarded, by reason.", ["reason"],
            registry=r,
        )  # fmt: skip
        self.mismatches = Counter(
            "haul_digest_mismatches", "Uploads whose stored bytes did not hash to the SHA-256 "
            "their client declared (found at once or in the background); never shared.",
            registry=r,
        )  # fmt: skip
        self.terminated = Counter(
            "haul_uploads_terminated", "Uploads deleted by their client.", registry=r
        )
        self.expired = Counter(
            "haul_uploads_expired",
            "Uploads expired (unfinished, or partials never taken).",
            registry=r,
        )
        self.instant = Counter(
            "haul_instant_uploads", "Uploads completed from content already held.", registry=r
        )
        self.bytes_received = Counter(
            "haul_bytes_received", "Upload bytes stored from request bodies.", registry=r
        )
        self.active = Gauge(
            "haul_active_uploads", "Unfinished uploads (every node's, from the records).",
            registry=r,
        )  # fmt: skip
        self.requests = Counter(
            "haul_requests", "HTTP requests answered.", ["method", "status"], registry=r
        )
        self.duration = Histogram(
            "haul_request_duration_seconds", "Time from a request's start to its answer's end.",
            ["method"], registry=r,
        )  # fmt: skip
        self.storage_seconds = Histogram(
            "haul_storage_operation_seconds", "Time of each storage backend call.",
            ["backend", "operation"], buckets=_STORAGE_BUCKETS, registry=r,
        )  # fmt: skip
        self.hook_deliveries = Counter(
            "haul_hook_deliveries", "Hook events sent, by type and outcome (post-*: delivered, "
            "failed (retried), dropped; pre-*: allowed, rejected, failed).", ["type", "outcome"],
            registry=r,
        )  # fmt: skip
        self.hook_outbox_pending = Gauge(
            "haul_hook_outbox_pending", "Hook events in the outbox not delivered yet (all nodes').",
            registry=r,
        )  # fmt: skip
        for reason in events.REJECTIONS:  # every series exists from the start, at 0
            self.failed.labels(reason)
        for kind in ("single", "partial", "final"):
            self.created.labels(kind)
            self.completed.labels(kind)

    async def hear(self, event: events.Event) -> None:
        """An events subscriber: counting never fails a request."""
        if isinstance(event, events.Created):
            self.created.labels(_kind(event.upload)).inc()
        elif isinstance(event, events.Progress):
            self.bytes_received.inc(event.received)
        elif isinstance(event, events.Finished):
            self.completed.labels(_kind(event.upload)).inc()
            if event.instant:
                self.instant.inc()
        elif isinstance(event, events.Rejected):
            self.failed.labels(event.reason or "other").inc()
            if event.reason == "digest":
                self.mismatches.inc()
        elif isinstance(event, events.Terminated):
            self.terminated.inc()
        elif isinstance(event, events.Expired):
            self.expired.inc()

    def hook_delivery(self, kind: str, outcome: str) -> None:
        self.hook_deliveries.labels(kind, outcome).inc()

    def storage_operation(self, operation: str, seconds: float) -> None:
        self.storage_seconds.labels(self.backend, operation).observe(seconds)

    def endpoint(self, store: MetadataStore, token: str) -> Handler:
        async def metrics(request: Request) -> Response:
            if token:
                given = request.headers.get("authorization", "").removeprefix("Bearer ")
                if not hmac.compare_digest(given.encode(), token.encode()):
                    return PlainTextResponse(
                        "ERR_UNAUTHORIZED: /metrics needs the metrics token\n",
                        status_code=401,
                        headers={"WWW-Authenticate": 'Bearer realm="haul metrics"'},
                    )
            self.active.set(await store.count_active())
            if isinstance(store, Outbox):
                self.hook_outbox_pending.set(await store.outbox_pending())
            return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

        return metrics


class RequestMetrics:
    """Counts every answered request by method and status, and times it."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        started = time.perf_counter()
        status = 500  # an app that fails before answering is answered 500 by the server

        async def counting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, counting)
        finally:
            self.metrics.requests.labels(method, str(status)).inc()
            self.metrics.duration.labels(method).observe(time.perf_counter() - started)
