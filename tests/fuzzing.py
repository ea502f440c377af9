"""What the OpenAPI fuzz tests share: the schemathesis schema of a served document, the checks
every answer must pass, and the seeding. The default run is derandomised (the same cases every
time, so a failure reproduces); the exploratory run (`-m slow`) draws a new seed each time,
or takes HAUL_FUZZ_SEED, and names it in every failure."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

EXAMPLES = int(os.environ.get("HAUL_FUZZ_EXAMPLES", "60"))
EXPLORE_EXAMPLES = int(os.environ.get("HAUL_FUZZ_EXPLORE_EXAMPLES", "300"))
SEED = int(os.environ.get("HAUL_FUZZ_SEED") or secrets.randbelow(2**32))
# tus answers a wrong protocol version with 412 and a bad checksum with 460: rejections too.
REJECTIONS = ["400", "401", "403", "404", "405", "409", "412", "413", "415", "416", "422", "460"]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    negative_data_rejection,
]

schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")

Test = Callable[..., Any]


def fuzz_schema(document: dict[str, Any]) -> Any:
    schema = schemathesis.openapi.from_dict(document)
    schema.config.generation.update(
        modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE],
        allow_extra_parameters=False,  # unknown headers are legal HTTP, not malformed requests
    )
    schema.config.checks.negative_data_rejection.expected_statuses = REJECTIONS
    return schema


def _settings(examples: int, *, derandomize: bool) -> hypothesis.settings:
    return hypothesis.settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=derandomize,
        database=None,  # no replay of earlier failures: a run depends on its seed alone
    )


def reproducible(test: Test) -> Test:
    """The same cases on every run (for the default suite)."""
    return _settings(EXAMPLES, derandomize=True)(test)


def exploring(test: Test) -> Test:
    """New cases on every run, from SEED (for `-m slow`)."""
    return pytest.mark.slow(
        hypothesis.seed(SEED)(_settings(EXPLORE_EXAMPLES, derandomize=False)(test))
    )


def send(case: Any, base_url: str, *, seeded: bool) -> None:
    """Send the case and check its answer; a failure of an exploratory run names its seed."""
    try:
        case.call_and_validate(base_url=base_url, checks=CHECKS)
    except BaseException:  # a FailureGroup is a BaseExceptionGroup
        if seeded:  # shown under the failure's captured output
            print(f"fuzzed with HAUL_FUZZ_SEED={SEED}; set it to run the same cases again")
        raise
