"""Prometheus metrics counted from the core's events and the requests, read back with
prometheus-client's own parser (in-process, the fast tier)."""

from __future__ import annotations

import hashlib

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from haul.core.lifecycle import Limits
from haul.core.service import UploadService
from haul.http.app import create_app
from haul.http.metrics import Metrics
from haul.locks.memory import MemoryLocker
from haul.records.memory import MemoryStore
from haul.storage.memory import MemoryStorage
from haul.storage.timed import timed
from tests.inprocess import memory_settings

pytestmark = pytest.mark.fast
TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {**TUS, "Content-Type": "application/offset+octet-stream"}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def app_with_metrics(**settings: object) -> httpx.AsyncClient:
    metrics = Metrics("memory")
    storage = timed(MemoryStorage(), metrics.storage_operation)
    service = UploadService(storage, MemoryStore(), MemoryLocker(), Limits(anonymous_dedup=True))
    app = create_app(memory_settings(**settings), service, metrics=metrics)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://haul.test")


async def upload(http: httpx.AsyncClient, data: bytes, **headers: str) -> httpx.Response:
    created = await http.post(
        "/files/", headers={**TUS, "Upload-Length": str(len(data)), **headers}
    )
    if "upload-offset" in created.headers and created.headers["upload-offset"] == str(len(data)):
        return created  # instant
    return await http.patch(created.headers["location"], headers={**OCTETS, "Upload-Offset": "0"},
                            content=data)  # fmt: skip


async def test_counters_move_with_uploads() -> None:
    async with app_with_metrics() as http:
        before = samples((await http.get("/metrics")).text)
        assert before[("haul_uploads_created_total", (("kind", "single"),))] == 0
        data = b"metrics" * 1000
        digest = (
            "sha-256=:"
            + __import__("base64").b64encode(hashlib.sha256(data).digest()).decode()
            + ":"
        )
        assert (await upload(http, data)).status_code == 204
        instant = await upload(http, data, **{"Repr-Digest": digest})
        assert instant.status_code == 201
        wrong = await upload(http, b"other bytes", **{"Repr-Digest": digest})
        assert wrong.status_code == 422
        await http.post("/files/", headers={**TUS, "Upload-Length": "10"})  # left unfinished
        after = samples((await http.get("/metrics")).text)
    assert after[("haul_uploads_created_total", (("kind", "single"),))] == 4
    assert after[("haul_uploads_completed_total", (("kind", "single"),))] == 2
    assert after[("haul_instant_uploads_total", ())] == 1
    assert after[("haul_uploads_failed_total", (("reason", "digest"),))] == 1
    assert after[("haul_digest_mismatches_total", ())] == 1  # found at once, as on S3 later
    assert after[("haul_bytes_received_total", ())] == len(data) + len(b"other bytes")
    assert after[("haul_active_uploads", ())] == 1
    assert after[("haul_requests_total", (("method", "PATCH"), ("status", "204")))] == 1
    assert after[("haul_requests_total", (("method", "PATCH"), ("status", "422")))] == 1
    assert after[("haul_request_duration_seconds_count", (("method", "POST"),))] == 4
    writes = (
        "haul_storage_operation_seconds_count",
        (("backend", "memory"), ("operation", "write")),
    )
    assert after[writes] >= 2


async def test_the_metrics_token_is_required_when_set() -> None:
    async with app_with_metrics(metrics_token="s3cret") as http:
        refused = await http.get("/metrics")
        assert refused.status_code == 401
        assert refused.text.startswith("ERR_UNAUTHORIZED: ")
        wrong = await http.get("/metrics", headers={"Authorization": "Bearer guess"})
        assert wrong.status_code == 401
        allowed = await http.get("/metrics", headers={"Authorization": "Bearer s3cret"})
        assert allowed.status_code == 200
        assert "haul_uploads_created_total" in allowed.text


async def test_no_metrics_means_no_endpoint() -> None:
    async with app_with_metrics(metrics="false") as http:
        assert (await http.get("/metrics")).status_code == 404


async def test_every_answer_carries_a_request_id() -> None:
    async with app_with_metrics() as http:
        mine = await http.options("/files/", headers={"X-Request-Id": "trace-42"})
        assert mine.headers["x-request-id"] == "trace-42"
        made = await http.options("/files/", headers={"X-Request-Id": "bad id\twith spaces"})
        assert made.headers["x-request-id"] != "bad id\twith spaces"
        assert len(made.headers["x-request-id"]) == 16
