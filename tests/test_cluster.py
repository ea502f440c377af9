"""Three haul nodes behind nginx (round robin, no stickiness), sharing PostgreSQL for records
and locks (or Redis for locks) and one data dir for bytes: any request of any upload may land
on any node, and a node killed mid-upload does not stop the uploads."""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.helpers import (
    HAUL,
    JS_DIR,
    OCTETS,
    TUS,
    HaulServer,
    env_without_proxy,
    random_file,
    sha256_file,
)
from tests.services import nginx_balancer
from tests.test_s3_server import s3_options

MiB = 1 << 20


@dataclass
class Cluster:
    nodes: list[HaulServer]
    port: int  # nginx

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> str:
        return self.url + "/files/"


@pytest.fixture(params=["postgres-locks", "redis-locks", "s3"])
def cluster(request: pytest.FixtureRequest, pg_dsn: str, tmp_path: Path) -> Iterator[Cluster]:
    options = ["--db", pg_dsn, "--trust-proxy", "--link-secret", "cluster-secret"]
    if request.param == "redis-locks":
        redis = request.getfixturevalue("redis_url")
        # A short lease: the dead node's locks free up within the clients' retry budget.
        options += ["--locker", "redis", "--redis-url", redis, "--lock-lease", "3s",
                    "--digest-index", "redis"]  # fmt: skip
    if request.param == "s3":  # bytes in S3: the nodes share no disk at all
        options += s3_options(request.getfixturevalue("rgw"), request.getfixturevalue("s3_bucket"))
    nodes = []
    for index in range(3):
        # Without S3, one volume every node mounts; with S3, each node its own scratch dir.
        data = tmp_path / (f"node{index}-data" if request.param == "s3" else "shared-data")
        node = HaulServer(data_dir=data, extra=options, log_path=tmp_path / f"node{index}.log")
        nodes.append(node.start())
    try:
        with nginx_balancer([node.port for node in nodes]) as port:
            yield Cluster(nodes, port)
    finally:
        for node in nodes:
            node.stop()


def served_by(cluster: Cluster) -> list[int]:
    """How many requests each node logged having handled (access log lines)."""
    return [
        sum(1 for line in (node.log_path.read_text() if node.log_path else "").splitlines()
            if "created upload" in line or "complete (" in line)
        for node in cluster.nodes
    ]  # fmt: skip


def test_uploads_survive_a_node_killed_mid_upload(
    cluster: Cluster, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    size = 256 * MiB if request.node.callspec.id == "redis-locks" else 1024 * MiB
    for_cli = random_file(tmp_path / "cli.bin", size, seed=31)
    for_js = random_file(tmp_path / "js.bin", size, seed=32)
    js_options = {"file": str(for_js), "endpoint": cluster.endpoint, "parallelUploads": 4,
                  "chunkSize": 8 * MiB}  # fmt: skip
    env = env_without_proxy()
    cli = subprocess.Popen(
        [HAUL, "upload", str(for_cli), "--server", cluster.url, "--json", "--no-resume",
         "--parallel", "4", "--chunk-size", "8MiB", "--retries", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    js = subprocess.Popen(
        ["node", str(JS_DIR / "tus_upload.mjs"), json.dumps(js_options)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    # Kill one node once both clients are well under way.
    victim = cluster.nodes[1]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if victim.log_path and victim.log_path.read_text().count("complete (") >= 3:
            break
        time.sleep(0.05)
    assert cli.poll() is None  # both are still sending: the node dies mid-upload
    assert js.poll() is None
    victim.kill()
    cli_out, cli_err = cli.communicate(timeout=300)
    js_out, js_err = js.communicate(timeout=300)
    assert cli.returncode == 0, cli_err[-2000:]
    assert js.returncode == 0, js_err[-2000:] + js_out[-2000:]
    cli_url = json.loads(cli_out.strip().splitlines()[-1])["url"]
    js_url = json.loads(js_out.strip().splitlines()[-1])["url"]
    with httpx.Client(trust_env=False, timeout=120) as client:
        for url, source in ((cli_url, for_cli), (js_url, for_js)):
            assert url.startswith(cluster.url)  # URLs name the balancer, not a node
            digest = hashlib.sha256()
            with client.stream("GET", url) as response:
                assert response.status_code == 200
                for block in response.iter_bytes(MiB):
                    digest.update(block)
            assert digest.hexdigest() == sha256_file(source)
    alive = [n for n in cluster.nodes if n is not victim]
    assert all(count > 0 for count in served_by(Cluster(alive, cluster.port)))


def test_instant_upload_works_across_nodes(cluster: Cluster, tmp_path: Path) -> None:
    source = random_file(tmp_path / "twice.bin", 24 * MiB, seed=33)
    first_node, second_node, reader = cluster.nodes

    def upload(node: HaulServer) -> dict[str, object]:
        done = subprocess.run(
            [HAUL, "upload", str(source), "--server", node.url, "--json", "--no-resume"],
            capture_output=True, text=True, timeout=120, env=env_without_proxy(),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]

    def log_of(node: HaulServer) -> str:
        return node.log_path.read_text() if node.log_path else ""

    first = upload(first_node)  # every byte through one node ...
    assert first["instant"] is False
    second = upload(second_node)  # ... the same content declared to another
    assert second["instant"] is True
    assert second["url"] != first["url"]
    first_id = str(first["url"]).rsplit("/", 1)[1]
    second_id = str(second["url"]).rsplit("/", 1)[1]
    # The node that answered the second upload found the content the first node stored.
    assert f"upload {first_id} complete" in log_of(first_node)
    assert f"instant upload {second_id}: same content as " in log_of(second_node)
    assert f"upload {first_id} complete" not in log_of(second_node)
    assert second_id not in log_of(first_node)
    with httpx.Client(trust_env=False, timeout=60) as client:  # and a third node serves it
        body = client.get(f"{reader.url}/files/{second_id}").content
    assert hashlib.sha256(body).hexdigest() == sha256_file(source)


def test_two_clients_racing_on_one_upload_through_different_nodes(cluster: Cluster) -> None:
    size = 32 * MiB
    data = bytes(range(256)) * (size // 256)
    with httpx.Client(trust_env=False, timeout=60) as client:
        created = client.post(cluster.endpoint, headers={**TUS, "Upload-Length": str(size)})
        path = httpx.URL(created.headers["location"]).path
    results: list[int] = []
    failures: list[BaseException] = []
    start = threading.Barrier(len(cluster.nodes))

    def race(node: HaulServer) -> None:
        # Each client sends everything from offset 0, straight to its own node, at once.
        try:
            with httpx.Client(trust_env=False, timeout=60) as client:
                start.wait(30)
                answer = client.patch(
                    node.url + path,
                    content=data,
                    headers={**TUS, "Upload-Offset": "0", "Content-Type": OCTETS},
                )
                results.append(answer.status_code)
        except BaseException as error:  # reported below: a thread's exception is lost otherwise
            failures.append(error)

    racers = [threading.Thread(target=race, args=(node,)) for node in cluster.nodes]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    assert not failures, failures
    assert len(results) == len(cluster.nodes)  # every racer got an answer
    assert results.count(204) == 1  # exactly one won
    assert all(code in (204, 409, 423) for code in results), results
    with httpx.Client(trust_env=False, timeout=60) as client:
        for node in cluster.nodes:  # every node sees the same, complete, uncorrupted upload
            assert client.head(node.url + path, headers=TUS).headers["upload-offset"] == str(size)
        assert client.get(cluster.url + path).content == data
