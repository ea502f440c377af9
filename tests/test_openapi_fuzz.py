"""Every endpoint of the OpenAPI document (/openapi.json) fuzzed by schemathesis against a real
server: valid and malformed requests alike never get a 500, only documented status codes,
and no malformed request is accepted. The budget is bounded; raise it with HAUL_FUZZ_EXAMPLES."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import negative_data_rejection, status_code_conformance

from haul.config import load_settings
from haul.http import openapi
from tests.helpers import HaulServer

NAME = "filename ZnV6ei50eHQ="  # fuzz.txt: the policy needs a name
EXAMPLES = int(os.environ.get("HAUL_FUZZ_EXAMPLES", "60"))
# tus answers a wrong protocol version with 412 and a bad checksum with 460: rejections too.
REJECTIONS = ["400", "401", "403", "404", "405", "409", "412", "413", "415", "416", "422", "460"]

schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")


# The document the server serves, built from the same code; cases are sent to a live server.
schema = schemathesis.openapi.from_dict(openapi.document(load_settings()))
schema.config.generation.update(
    modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE],
    allow_extra_parameters=False,  # unknown headers are legal HTTP, not malformed requests
)
schema.config.checks.negative_data_rejection.expected_statuses = REJECTIONS


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HaulServer]:
    data: Path = tmp_path_factory.mktemp("fuzz")
    server = HaulServer(
        data_dir=data / "data",
        extra=[
            "--api-keys", "fuzz:fuzz-key-0123456789abcdef", "--allow-anonymous",
            "--allowed-types", ".txt,image/*", "--max-size", "1MB",
            "--max-requests-per-client", "0", "--max-connections-per-client", "0",
        ],
    ).start()  # fmt: skip
    yield server
    server.stop()


def test_the_served_document_is_the_one_fuzzed(fuzzed: HaulServer) -> None:
    served = httpx.get(fuzzed.url + "/openapi.json", trust_env=False).json()
    assert served == openapi.document(load_settings())


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_endpoint_survives_fuzzing(case: schemathesis.Case, fuzzed: HaulServer) -> None:
    upload_id = (case.path_parameters or {}).get("upload_id")
    if isinstance(upload_id, str) and re.fullmatch("[0-9a-f]{32}", upload_id):
        # A well-formed id names a real, half-written upload: the requests reach its handlers.
        created = httpx.post(
            fuzzed.endpoint,
            headers={"Tus-Resumable": "1.0.0", "Upload-Length": "100", "Upload-Metadata": NAME},
            trust_env=False,
        )
        case.path_parameters["upload_id"] = created.headers["location"].rsplit("/", 1)[1]
    case.call_and_validate(
        base_url=fuzzed.url,
        checks=[not_a_server_error, status_code_conformance, negative_data_rejection],
    )
