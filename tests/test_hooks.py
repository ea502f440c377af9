"""The post-* hooks against a real receiver process: each event arrives with a stable id and a
valid signature, in order per upload, through a receiver that fails, goes down, and a server
killed -9 before it could deliver; the hook metrics move."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import (
    HAUL,
    TUS,
    HaulServer,
    create,
    env_without_proxy,
    free_port,
    patch,
    random_file,
    sha256_file,
    wait_for,
)
from tests.hook_receiver import HookReceiver
from tests.test_s3_server import s3_options

SECRET = "hook-secret"
ORDER = {"post-create": 0, "post-receive": 1, "post-finish": 2, "post-terminate": 3}


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[HookReceiver]:
    hook = HookReceiver(free_port(), tmp_path / "received.jsonl").start()
    yield hook
    hook.stop()


def hook_options(receiver: HookReceiver, *extra: str) -> list[str]:
    return ["--hook-url", receiver.url, "--hook-secret", SECRET, *extra]


def upload(client: httpx.Client, server: HaulServer, data: bytes, name: str = "a.bin") -> str:
    """A tus upload in two requests (so it has progress to tell)."""
    metadata = "filename " + base64.b64encode(name.encode()).decode()
    url = create(client, server, len(data), **{"Upload-Metadata": metadata})
    half = len(data) // 2
    assert patch(client, url, 0, data[:half]).status_code == 204
    assert patch(client, url, half, data[half:]).status_code == 204
    return url


POSTS = "post-create,post-receive,post-finish,post-terminate,post-expire"


def of_upload(events: list[dict[str, Any]], url: str) -> list[dict[str, Any]]:
    """The upload's post-* events (the blocking ones are asked in the request, not queued)."""
    upload_id = url.rsplit("/", 1)[1]
    return [e for e in events if e["upload"]["id"] == upload_id and e["type"].startswith("post-")]


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def in_order(events: list[dict[str, Any]]) -> bool:
    ranks = [ORDER[e["type"]] for e in events]
    return ranks == sorted(ranks)


def hook_metrics(server: HaulServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(server.url + "/metrics", trust_env=False).text
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("haul_hook"):
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def counted(server: HaulServer, kind: str, outcome: str) -> float:
    key = ("haul_hook_deliveries_total", (("outcome", outcome), ("type", kind)))
    return hook_metrics(server).get(key, 0.0)


def pending(server: HaulServer) -> float:
    return hook_metrics(server)[("haul_hook_outbox_pending", ())]


def test_each_event_arrives_signed_described_and_in_order(
    make_server: Callable[..., HaulServer], client: httpx.Client, receiver: HookReceiver
) -> None:
    server = make_server(*hook_options(receiver))
    data = b"hooked bytes " * 1000
    url = upload(client, server, data, "r\u00e9sum\u00e9.txt")
    other = create(client, server, 10)
    assert client.delete(other, headers=TUS).status_code == 204
    wait_for(lambda: "post-finish" in kinds(of_upload(receiver.delivered(), url)))
    wait_for(lambda: "post-terminate" in kinds(of_upload(receiver.delivered(), other)))

    events = of_upload(receiver.delivered(), url)
    assert kinds(events)[0] == "post-create"
    assert kinds(events)[-1] == "post-finish"
    assert set(kinds(events)) == {"post-create", "post-receive", "post-finish"}
    assert in_order(events)
    finished = events[-1]
    assert finished["upload"] == {
        "id": url.rsplit("/", 1)[1], "url": url, "length": len(data), "offset": len(data),
        "metadata": {"filename": "r\u00e9sum\u00e9.txt"}, "owner": "",
        "sha256": hashlib.sha256(data).hexdigest(), "complete": True, "partial": False,
        "final": False, "storage_key": None,
    }  # fmt: skip
    assert finished["time"].endswith("Z")
    assert "T" in finished["time"]
    assert events[0]["upload"]["offset"] == 0
    assert events[0]["upload"]["sha256"] is None
    assert kinds(of_upload(receiver.delivered(), other)) == ["post-create", "post-terminate"]
    assert "request" not in finished  # only blocking events carry the request
    asked = [e for e in receiver.delivered() if e["upload"]["url"] == url]
    assert [e["type"] for e in asked if e["type"].startswith("pre-")] == [
        "pre-create",
        "pre-finish",
    ]
    assert asked[0]["request"]["method"] == "POST"
    assert asked[0]["request"]["path"] == "/files/"
    for record in receiver.records():  # signed with the secret; the header names the body's id
        mac = hmac.new(SECRET.encode(), record["body"].encode(), hashlib.sha256).hexdigest()
        assert record["signature"] == "sha256=" + mac
        assert record["id"] == record["event"]["id"]
    ids = [e["id"] for e in receiver.delivered()]
    assert len(ids) == len(set(ids))


def test_progress_is_throttled_per_upload(
    make_server: Callable[..., HaulServer], client: httpx.Client, receiver: HookReceiver
) -> None:
    server = make_server(*hook_options(receiver, "--hook-progress-interval", "1h"))
    data = bytes(4000)
    url = create(client, server, len(data))
    for offset in range(0, len(data), 1000):  # four requests, four Progress events
        assert patch(client, url, offset, data[offset : offset + 1000]).status_code == 204
    wait_for(lambda: "post-finish" in kinds(of_upload(receiver.delivered(), url)))
    assert kinds(of_upload(receiver.delivered(), url)) == [
        "post-create", "post-receive", "post-finish"
    ]  # fmt: skip


def test_hook_events_chooses_the_types(
    make_server: Callable[..., HaulServer], client: httpx.Client, receiver: HookReceiver
) -> None:
    server = make_server(*hook_options(receiver, "--hook-events", "post-finish"))
    url = upload(client, server, b"x" * 100)
    wait_for(lambda: len(receiver.delivered()) >= 1)
    second = upload(client, server, b"y" * 100)
    wait_for(lambda: len(receiver.delivered()) >= 2)
    assert [(e["type"], e["upload"]["url"]) for e in receiver.delivered()] == [
        ("post-finish", url), ("post-finish", second)
    ]  # fmt: skip


def test_no_event_is_lost_to_a_failing_receiver_an_outage_or_kill_9(
    make_server: Callable[..., HaulServer],
    client: httpx.Client,
    receiver: HookReceiver,
    tmp_path: Path,
) -> None:
    receiver.control(fail=1)  # the very first delivery is answered 500
    # Only post-* hooks: a blocking hook with its receiver down refuses the uploads (503).
    options = hook_options(receiver, "--hook-events", POSTS)
    server = make_server(*options, data_dir=tmp_path / "data")
    first = upload(client, server, b"first" * 100)
    wait_for(lambda: "post-finish" in kinds(of_upload(receiver.delivered(), first)), 30)
    assert counted(server, "post-create", "failed") == 1
    assert counted(server, "post-finish", "delivered") == 1

    receiver.stop()  # down: the next uploads' events wait in the outbox
    later = [upload(client, server, bytes([n]) * 3000, f"{n}.bin") for n in range(3)]
    assert client.delete(later[2], headers=TUS).status_code == 204
    wait_for(lambda: counted(server, "post-create", "failed") >= 2)  # it did try
    assert pending(server) >= 9
    server.kill()  # finished, told the clients, delivered nothing: kill -9
    receiver.start()
    server.start()  # same data dir, same outbox
    uploads = [first, *later]
    wait_for(lambda: all(
        {"post-finish"} <= set(kinds(of_upload(receiver.delivered(), url))) for url in uploads
    ), 60)  # fmt: skip
    wait_for(lambda: "post-terminate" in kinds(of_upload(receiver.delivered(), later[2])), 60)
    wait_for(lambda: pending(server) == 0)

    delivered = receiver.delivered()
    for url in uploads:
        events = of_upload(delivered, url)
        assert in_order(events), kinds(events)
        assert kinds(events).count("post-create") == kinds(events).count("post-finish") == 1
    by_id: dict[str, list[str]] = {}
    for record in receiver.records():  # every try of one event: the same id, the same body
        by_id.setdefault(record["id"], []).append(record["body"])
    assert all(len(set(bodies)) == 1 for bodies in by_id.values())
    assert {e["id"] for e in delivered} == set(by_id)  # each event tried was delivered
    failed = [r for r in receiver.records() if r["status"] == 500]
    assert len(failed) == 1
    assert failed[0]["id"] in {e["id"] for e in delivered}
    assert len([e["id"] for e in delivered]) == len(by_id)  # none delivered twice


def test_a_command_hook_gets_the_event_on_stdin(
    make_server: Callable[..., HaulServer], client: httpx.Client, tmp_path: Path
) -> None:
    log = tmp_path / "events.jsonl"
    command = f"cat >> {log} && echo >> {log}"
    server = make_server("--hook-command", command, "--hook-events", "post-create,post-finish")
    url = upload(client, server, b"z" * 64)
    wait_for(lambda: log.exists() and log.read_text().count("post-finish") == 1)
    events = [json.loads(line) for line in log.read_text().splitlines() if line]
    assert kinds(events) == ["post-create", "post-finish"]
    assert {e["upload"]["url"] for e in events} == {url}


def test_two_nodes_on_one_postgres_never_deliver_one_event_at_once(
    make_server: Callable[..., HaulServer], client: httpx.Client, tmp_path: Path, pg_dsn: str
) -> None:
    # Each delivery takes a while, so two nodes claiming at once would overlap on the receiver.
    slow = HookReceiver(free_port(), tmp_path / "slow.jsonl", delay=0.2).start()
    try:
        options = [*hook_options(slow, "--hook-events", POSTS), "--db", pg_dsn,
                   "--locker", "postgres"]  # fmt: skip
        nodes = [make_server(*options, data_dir=tmp_path / "shared") for _ in range(2)]
        urls = []
        for n in range(12):  # created on one node, written through the other
            url = create(client, nodes[n % 2], 200)
            url = url.replace(nodes[n % 2].url, nodes[(n + 1) % 2].url)
            assert patch(client, url, 0, bytes([n]) * 200).status_code == 204
            urls.append(url.rsplit("/", 1)[1])

        def finished() -> set[str]:
            return {e["upload"]["id"] for e in slow.delivered() if e["type"] == "post-finish"}

        wait_for(lambda: finished() == set(urls), 60)
        wait_for(lambda: pending(nodes[0]) == 0)
        records = slow.records()
    finally:
        slow.stop()
    by_id: dict[str, list[tuple[float, float]]] = {}
    for record in records:
        by_id.setdefault(record["id"], []).append((record["start"], record["end"]))
    assert len(by_id) == 12 * 3  # created, received, finished: one id each
    assert all(len(times) == 1 for times in by_id.values())  # each delivered exactly once
    for upload_id in urls:
        events = [r["event"] for r in records if r["event"]["upload"]["id"] == upload_id]
        assert kinds(events) == ["post-create", "post-receive", "post-finish"]
    by_node = [sum(counted(node, kind, "delivered") for kind in ORDER) for node in nodes]
    assert sum(by_node) == 36
    assert all(count > 0 for count in by_node), by_node  # both nodes delivered


def test_an_expired_upload_is_told(
    make_server: Callable[..., HaulServer], client: httpx.Client, receiver: HookReceiver
) -> None:
    options = hook_options(receiver, "--hook-events", POSTS)
    server = make_server(*options, "--expiration", "1s", "--sweep-interval", "1s")
    url = create(client, server, 100)
    wait_for(lambda: "post-expire" in kinds(of_upload(receiver.delivered(), url)), 30)
    told = of_upload(receiver.delivered(), url)
    assert kinds(told) == ["post-create", "post-expire"]
    assert told[0]["upload"]["url"] == url  # as the creating request addressed the server
    assert told[1]["upload"]["url"] == "/files/" + told[1]["upload"]["id"]  # no request: a path


def test_an_event_older_than_the_maximum_age_is_dropped_and_counted(
    make_server: Callable[..., HaulServer], client: httpx.Client, receiver: HookReceiver
) -> None:
    receiver.stop()
    options = hook_options(receiver, "--hook-events", "post-create", "--hook-max-age", "1s")
    server = make_server(*options)
    create(client, server, 100)
    wait_for(lambda: counted(server, "post-create", "dropped") == 1, 30)
    assert pending(server) == 0
    assert counted(server, "post-create", "failed") >= 1  # it was tried before it was dropped
    assert counted(server, "post-create", "delivered") == 0


def test_a_node_killed_mid_delivery_leaves_the_event_to_another_after_its_lease(
    make_server: Callable[..., HaulServer], client: httpx.Client, tmp_path: Path, pg_dsn: str
) -> None:
    slow = HookReceiver(free_port(), tmp_path / "slow.jsonl", delay=2.0).start()
    try:
        options = [*hook_options(slow, "--hook-events", "post-create", "--hook-timeout", "3s"),
                   "--db", pg_dsn, "--locker", "postgres"]  # fmt: skip
        first = make_server(*options, data_dir=tmp_path / "shared")
        create(client, first, 10)
        wait_for(lambda: len(slow.arrivals()) == 1)  # on its way, not answered yet
        first.kill()
        second = make_server(*options, data_dir=tmp_path / "shared")
        wait_for(lambda: len(slow.delivered()) == 2, 90)  # the lease ran out: taken up
        wait_for(lambda: pending(second) == 0)
        records = slow.records()
    finally:
        slow.stop()
    assert [r["id"] for r in records] == [records[0]["id"]] * 2  # one event, one id
    assert records[0]["body"] == records[1]["body"]
    assert records[1]["start"] > records[0]["end"]  # never delivered by both at once


def test_a_direct_upload_to_s3_is_hooked_like_a_tus_one(
    make_server: Callable[..., HaulServer],
    receiver: HookReceiver,
    rgw: str,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    server = make_server(*s3_options(rgw, s3_bucket), *hook_options(receiver))
    source = random_file(tmp_path / "direct.bin", 6 * (1 << 20) + 5, seed=7)
    done = subprocess.run(
        [HAUL, "upload", str(source), "--server", server.url, "--direct", "--json"],
        capture_output=True, text=True, timeout=180,
        env={**env_without_proxy(), "HAUL_STATE_DIR": str(tmp_path / "state")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    url = json.loads(done.stdout.strip().splitlines()[-1])["url"]
    wait_for(lambda: "post-finish" in kinds(of_upload(receiver.delivered(), url)), 30)
    upload_id = url.rsplit("/", 1)[1]
    told = [e for e in receiver.delivered() if e["upload"]["id"] == upload_id]
    assert [e["type"] for e in told if e["type"].startswith("pre-")] == ["pre-create", "pre-finish"]
    assert kinds(of_upload(told, url))[0] == "post-create"
    finished = of_upload(told, url)[-1]
    assert finished["upload"]["sha256"] == sha256_file(source)
    assert finished["upload"]["length"] == source.stat().st_size


def test_progress_is_throttled_across_nodes(
    make_server: Callable[..., HaulServer], receiver: HookReceiver, client: httpx.Client,
    tmp_path: Path,
) -> None:  # fmt: skip
    """Two nodes on one data dir take turns with one upload's PATCHes: the interval is the
    cluster's, not each node's."""
    shared = tmp_path / "shared"
    options = hook_options(receiver, "--hook-progress-interval", "60")
    nodes = [make_server(*options, data_dir=shared), make_server(*options, data_dir=shared)]
    url = create(client, nodes[0], 40)
    path = url.split("/files/", 1)[1]
    for offset in range(0, 40, 10):
        node = nodes[(offset // 10) % 2]
        answer = patch(client, f"{node.endpoint}{path}", offset, b"p" * 10)
        assert answer.status_code == 204, answer.text
    wait_for(lambda: "post-finish" in kinds(of_upload(receiver.delivered(), url)))
    assert kinds(of_upload(receiver.delivered(), url)).count("post-receive") == 1
