"""Every endpoint of the OpenAPI document (/openapi.json) fuzzed by schemathesis against a real
server: valid and malformed requests alike never get a 500, only documented status codes,
and no malformed request is accepted. The default run is derandomised (see tests.fuzzing);
`-m slow` explores with a new seed. Budgets: HAUL_FUZZ_EXAMPLES, HAUL_FUZZ_EXPLORE_EXAMPLES."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from haul.config import load_settings
from haul.http import openapi
from tests.fuzzing import exploring, fuzz_schema, reproducible, send
from tests.helpers import HaulServer

NAME = "filename ZnV6ei50eHQ="  # fuzz.txt: the policy needs a name

# The document the server serves, built from the same code; cases are sent to a live server.
schema = fuzz_schema(openapi.document(load_settings()))


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


def _with_a_real_upload(case: Any, server: HaulServer) -> Any:
    upload_id = (case.path_parameters or {}).get("upload_id")
    if isinstance(upload_id, str) and re.fullmatch("[0-9a-f]{32}", upload_id):
        # A well-formed id names a real, half-written upload: the requests reach its handlers.
        created = httpx.post(
            server.endpoint,
            headers={"Tus-Resumable": "1.0.0", "Upload-Length": "100", "Upload-Metadata": NAME},
            trust_env=False,
        )
        case.path_parameters["upload_id"] = created.headers["location"].rsplit("/", 1)[1]
    return case


@schema.parametrize()
@reproducible
def test_every_endpoint_survives_fuzzing(case: Any, fuzzed: HaulServer) -> None:
    send(_with_a_real_upload(case, fuzzed), fuzzed.url, seeded=False)


@schema.parametrize()
@exploring
def test_every_endpoint_survives_exploratory_fuzzing(case: Any, fuzzed: HaulServer) -> None:
    send(_with_a_real_upload(case, fuzzed), fuzzed.url, seeded=True)
