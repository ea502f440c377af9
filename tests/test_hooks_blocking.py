"""The blocking hooks against a real receiver process: pre-create refuses (the status and
message reach `haul upload` and an HTTP client), replaces the metadata; pre-finish hands
headers to the completing request; pre-terminate refuses; a hook that is down or fails
keeps the step from happening (503 ERR_HOOK_FAILED, Retry-After)."""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import HAUL, TUS, HaulServer, create, env_without_proxy, free_port, head, patch
from tests.hook_receiver import HookReceiver
from tests.test_hooks import counted


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[HookReceiver]:
    hook = HookReceiver(free_port(), tmp_path / "received.jsonl").start()
    yield hook
    hook.stop()


@pytest.fixture
def hooked(make_server: Callable[..., HaulServer], receiver: HookReceiver) -> HaulServer:
    return make_server("--hook-url", receiver.url, "--hook-timeout", "5")


REFUSAL = {"reject": {"status": 403, "message": "uploads are closed for maintenance"}}


def test_a_pre_create_refusal_reaches_the_http_client(
    hooked: HaulServer, client: httpx.Client, receiver: HookReceiver
) -> None:
    receiver.control(answers={"pre-create": REFUSAL})
    response = client.post(hooked.endpoint, headers={**TUS, "Upload-Length": "10"})
    assert response.status_code == 403
    assert response.text == "ERR_HOOK_REJECTED: uploads are closed for maintenance\n"
    assert "location" not in response.headers
    listed = client.get(hooked.url + "/api/uploads").json()
    assert listed["uploads"] == []  # nothing was created
    asked = receiver.delivered()
    assert [e["type"] for e in asked] == ["pre-create"]
    assert asked[0]["request"]["headers"]["upload-length"] == "10"
    assert asked[0]["upload"]["length"] == 10
    assert counted(hooked, "pre-create", "rejected") == 1
    assert counted(hooked, "pre-create", "allowed") == 0


def test_a_pre_create_refusal_reaches_haul_upload(
    hooked: HaulServer, receiver: HookReceiver, tmp_path: Path
) -> None:
    receiver.control(answers={"pre-create": REFUSAL})
    source = tmp_path / "refused.bin"
    source.write_bytes(b"r" * 5000)
    env = {**env_without_proxy(), "HAUL_STATE_DIR": str(tmp_path / "state")}
    done = subprocess.run(
        [HAUL, "upload", str(source), "--server", hooked.endpoint, "--no-dedup"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert "uploads are closed for maintenance" in done.stdout + done.stderr
    assert "403" in done.stdout + done.stderr or "ERR_HOOK_REJECTED" in done.stdout + done.stderr


def test_pre_create_replaces_the_metadata(
    hooked: HaulServer, client: httpx.Client, receiver: HookReceiver
) -> None:
    receiver.control(answers={"pre-create": {"metadata": {"filename": "renamed.txt", "k": "v"}}})
    sent = "filename " + base64.b64encode(b"original.txt").decode()
    url = create(client, hooked, 4, **{"Upload-Metadata": sent})
    kept = head(client, url).headers["upload-metadata"]
    decoded = dict(
        (pair.split(" ")[0], base64.b64decode(pair.split(" ")[1]).decode())
        for pair in kept.split(",")
    )
    assert decoded == {"filename": "renamed.txt", "k": "v"}
    asked = receiver.delivered()[0]
    assert asked["type"] == "pre-create"
    assert asked["upload"]["metadata"] == {"filename": "original.txt"}  # what the client sent


def test_a_repeated_creation_is_the_same_after_a_hook_replaced_its_metadata(
    hooked: HaulServer, client: httpx.Client, receiver: HookReceiver
) -> None:
    """haul upload sends an Idempotency-Key with every creation and repeats it when an answer
    is lost: the repeat is the same request, whatever the hook made of the first."""
    receiver.control(answers={"pre-create": {"metadata": {"filename": "renamed.txt"}}})
    named = "filename " + base64.b64encode(b"original.txt").decode()
    asked = {**TUS, "Upload-Length": "4", "Idempotency-Key": "key-1", "Upload-Metadata": named}
    first = client.post(hooked.endpoint, headers=asked)
    again = client.post(hooked.endpoint, headers=asked)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers["location"] == first.headers["location"]
    other = client.post(hooked.endpoint, headers={**asked, "Upload-Length": "5"})
    assert other.status_code == 422  # a different request under the same key still is not


def test_pre_finish_headers_reach_the_completing_request(
    hooked: HaulServer, client: httpx.Client, receiver: HookReceiver
) -> None:
    answer = {"headers": {"Haul-Thumbnail": "/thumbs/42.png", "Set-Cookie": "session=evil"}}
    receiver.control(answers={"pre-finish": answer})
    url = create(client, hooked, 6)
    first = patch(client, url, 0, b"abc")
    assert first.status_code == 204
    assert "haul-thumbnail" not in first.headers  # not complete yet: no pre-finish asked
    last = patch(client, url, 3, b"def", Origin="https://app.example")
    assert last.status_code == 204
    assert last.headers["haul-thumbnail"] == "/thumbs/42.png"
    assert "set-cookie" not in last.headers  # only Haul-* headers pass
    # A page on another origin may read them: CORS names them among the exposed headers.
    exposed = last.headers["access-control-expose-headers"].lower().split(", ")
    assert "haul-thumbnail" in exposed
    assert "upload-offset" in exposed
    asked = [e for e in receiver.delivered() if e["type"] == "pre-finish"]
    assert len(asked) == 1
    assert asked[0]["upload"]["offset"] == 6
    assert asked[0]["request"]["method"] == "PATCH"


def test_pre_terminate_refuses_a_delete(
    hooked: HaulServer, client: httpx.Client, receiver: HookReceiver
) -> None:
    receiver.control(answers={"pre-terminate": {"reject": {"status": 409, "message": "held"}}})
    url = create(client, hooked, 3)
    refused = client.delete(url, headers=TUS)
    assert refused.status_code == 409
    assert refused.text == "ERR_HOOK_REJECTED: held\n"
    assert head(client, url).status_code == 200  # still there
    receiver.control(answers={})
    assert client.delete(url, headers=TUS).status_code == 204
    assert head(client, url).status_code == 410


def test_a_failing_pre_finish_hook_leaves_the_upload_unfinished_until_it_answers(
    hooked: HaulServer, client: httpx.Client, receiver: HookReceiver
) -> None:
    url = create(client, hooked, 4)
    receiver.control(fail=1, fail_types=["pre-finish"])  # answered 500 once
    failed = patch(client, url, 0, b"data")
    assert failed.status_code == 503
    assert failed.text.startswith("ERR_HOOK_FAILED: ")
    assert int(failed.headers["retry-after"]) >= 1
    downloaded = client.get(url)
    assert downloaded.status_code == 200  # the next request completes it (the hook answers)
    assert downloaded.content == b"data"
    asked = [e for e in receiver.records() if e["event"]["type"] == "pre-finish"]
    assert [r["status"] for r in asked] == [500, 200]


def test_a_blocking_hook_that_is_down_fails_closed(
    hooked: HaulServer, client: httpx.Client, receiver: HookReceiver
) -> None:
    receiver.stop()
    refused = client.post(hooked.endpoint, headers={**TUS, "Upload-Length": "10"})
    assert refused.status_code == 503
    assert refused.text.startswith("ERR_HOOK_FAILED: the pre-create hook could not decide")
    assert "retry-after" in refused.headers
    assert counted(hooked, "pre-create", "failed") == 1
    assert client.get(hooked.url + "/api/uploads").json()["uploads"] == []
    assert not list((hooked.data_dir / "uploads").glob("*"))  # no bytes, no room made


def test_a_command_hook_refuses_through_its_stdout(
    make_server: Callable[..., HaulServer], client: httpx.Client, tmp_path: Path
) -> None:
    script = tmp_path / "hook.py"
    script.write_text(
        "import json, sys\n"
        "event = json.load(sys.stdin)\n"
        "name = event['upload']['metadata'].get('filename', '')\n"
        "if event['type'] == 'pre-create' and name.endswith('.exe'):\n"
        "    print(json.dumps({'reject': {'status': 415, 'message': 'no programs'}}))\n"
    )
    server = make_server("--hook-command", f"{sys.executable} {script}")
    program = "filename " + base64.b64encode(b"a.exe").decode()
    headers = {**TUS, "Upload-Length": "3", "Upload-Metadata": program}
    refused = client.post(server.endpoint, headers=headers)
    assert refused.status_code == 415
    assert refused.text == "ERR_HOOK_REJECTED: no programs\n"
    allowed = create(client, server, 3, **{"Upload-Metadata": "filename YS50eHQ="})  # a.txt
    assert patch(client, allowed, 0, b"abc").status_code == 204
