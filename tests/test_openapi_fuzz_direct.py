"""The direct-upload endpoints (/s3/multipart*, mounted only when the storage is S3) fuzzed by
schemathesis from the OpenAPI document, against a haul server on a real Ceph RADOS Gateway:
no 500, only documented status codes and response bodies, no malformed request accepted.
Seeding as in test_openapi_fuzz (derandomised by default, `-m slow` explores)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from haul.config import load_settings
from haul.http import openapi
from tests.fuzzing import exploring, fuzz_schema, reproducible, send
from tests.helpers import HaulServer
from tests.services import create_bucket
from tests.test_s3_server import s3_options

DIRECT_PATHS = {
    "/s3/multipart",
    "/s3/multipart/{uploadId}",
    "/s3/multipart/{uploadId}/{partNumber}",
    "/s3/multipart/{uploadId}/complete",
}


def s3_document() -> dict[str, Any]:
    return openapi.document(load_settings(overrides={"storage": "s3", "s3_bucket": "any"}))


schema = fuzz_schema(s3_document()).include(path_regex="^/s3/")


@pytest.fixture(scope="module")
def fuzzed(rgw: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HaulServer]:
    bucket = f"direct-fuzz-{uuid.uuid4().hex[:8]}"
    create_bucket(rgw, bucket)
    data: Path = tmp_path_factory.mktemp("direct-fuzz")
    server = HaulServer(
        data_dir=data / "data",
        extra=[
            *s3_options(rgw, bucket),
            # No type policy: a creation with any name succeeds, and its answer is checked.
            "--api-keys", "fuzz:fuzz-key-0123456789abcdef", "--allow-anonymous",
            "--max-size", "1MB",
            "--max-requests-per-client", "0", "--max-connections-per-client", "0",
        ],
    ).start()  # fmt: skip
    yield server
    server.stop()


def test_the_direct_endpoints_are_documented_only_where_they_are_served(
    fuzzed: HaulServer,
) -> None:
    served = httpx.get(fuzzed.url + "/openapi.json", trust_env=False).json()
    assert served == s3_document()
    assert set(served["paths"]) >= DIRECT_PATHS
    assert not DIRECT_PATHS & set(openapi.document(load_settings())["paths"])
    keys_only = load_settings(
        overrides={"storage": "s3", "s3_bucket": "any", "api_keys": "a:a-key-0123456789abcdef"}
    )
    for path in DIRECT_PATHS:
        for operation in openapi.document(keys_only)["paths"][path].values():
            if isinstance(operation, dict):  # not the shared parameters
                assert operation["security"] == [{"bearer": []}]  # no anonymous access


@pytest.mark.parametrize(
    "body",
    [
        {"filename": "a.txt", "type": 5},
        {"filename": "a.txt", "type": None},  # found by the fuzz: accepted
        {"filename": ["a.txt"]},
        {"filename": "a.txt", "metadata": ["not", "an", "object"]},
        [],
    ],
)
def test_a_malformed_creation_is_400(fuzzed: HaulServer, body: object) -> None:
    with httpx.Client(trust_env=False) as client:
        refused = client.post(fuzzed.url + "/s3/multipart", json=body)
        assert refused.status_code == 400, refused.text
        assert refused.text.startswith("ERR_")
        well_formed = {"filename": "a.txt", "type": "text/plain", "metadata": {"a": "b"}}
        assert client.post(fuzzed.url + "/s3/multipart", json=well_formed).status_code == 200


@pytest.mark.parametrize(
    "parts",
    [
        [[None, None]],  # found by the fuzz: a 500
        [7],
        [{"PartNumber": True, "ETag": "x"}],
        [{"PartNumber": 0, "ETag": "x"}],
        [{"PartNumber": 10_001, "ETag": "x"}],
        [{"PartNumber": 1}],
        [],
        {"PartNumber": 1, "ETag": "x"},
    ],
)
def test_a_malformed_completion_is_400(fuzzed: HaulServer, parts: object) -> None:
    with httpx.Client(trust_env=False) as client:
        created = client.post(fuzzed.url + "/s3/multipart", json={"filename": "a.txt"}).json()
        complete = f"{fuzzed.url}/s3/multipart/{created['uploadId']}/complete"
        refused = client.post(complete, params={"key": created["key"]}, json={"parts": parts})
    assert refused.status_code == 400, refused.text
    assert refused.text.startswith("ERR_")


def _with_a_real_upload(case: Any, server: HaulServer) -> Any:
    key = (case.query or {}).get("key")
    if isinstance(key, str) and re.fullmatch("[0-9a-f]{32}", key):
        # A well-formed key names a real direct upload in progress: the requests reach it.
        created = httpx.post(
            server.url + "/s3/multipart", json={"filename": "fuzz.txt"}, trust_env=False
        ).json()
        case.query["key"] = created["key"]
        if "uploadId" in (case.path_parameters or {}):
            case.path_parameters["uploadId"] = created["uploadId"]
    return case


@schema.parametrize()
@reproducible
def test_every_direct_endpoint_survives_fuzzing(case: Any, fuzzed: HaulServer) -> None:
    send(_with_a_real_upload(case, fuzzed), fuzzed.url, seeded=False)


@schema.parametrize()
@exploring
def test_every_direct_endpoint_survives_exploratory_fuzzing(case: Any, fuzzed: HaulServer) -> None:
    send(_with_a_real_upload(case, fuzzed), fuzzed.url, seeded=True)
