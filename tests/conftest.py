from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import HaulServer


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[object]:
    """Start real `haul serve` processes; each is stopped after the test."""
    started: list[HaulServer] = []

    def make(*extra: str, data_dir: Path | None = None, port: int | None = None) -> HaulServer:
        server = HaulServer(
            data_dir=data_dir or tmp_path / f"data{len(started)}", extra=list(extra)
        )
        if port is not None:
            server.port = port
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def server(make_server) -> HaulServer:  # type: ignore[no-untyped-def]
    return make_server()  # type: ignore[no-any-return]


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60, trust_env=False) as c:
        yield c


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """One PostgreSQL server for the session (DSN of its `postgres` database)."""
    from tests.services import postgres_server

    with postgres_server() as dsn:
        yield dsn


@pytest.fixture
def pg_dsn(postgres: str, request: pytest.FixtureRequest) -> str:
    """A fresh database for one test."""
    import re

    from tests.services import fresh_database

    name = "t_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:50]
    return fresh_database(postgres, name)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    from tests.services import redis_server

    with redis_server() as url:
        yield url


@pytest.fixture(scope="session")
def rgw() -> Iterator[str]:
    """A Ceph RADOS Gateway for the session: a real S3 endpoint (credentials in services)."""
    from tests.services import ceph_rgw

    with ceph_rgw() as endpoint:
        yield endpoint


@pytest.fixture
def s3_bucket(rgw: str, request: pytest.FixtureRequest) -> str:
    """A fresh bucket for one test."""
    import re
    import uuid

    from tests.services import create_bucket

    name = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower())[:40].strip("-")
    bucket = f"{name}-{uuid.uuid4().hex[:8]}"
    create_bucket(rgw, bucket)
    return bucket
