"""What an operator sees of a real `haul serve`: JSON log lines that name the request, the
upload and the owner, and /metrics (read by prometheus-client's parser) moving with uploads
sent by the real `haul upload` CLI."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import HAUL, OCTETS, TUS, random_file, sha256_file


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    raise AssertionError(f"no sample {name}{labels}")


def test_json_logs_name_the_request_upload_and_owner(make_server, client: httpx.Client) -> None:
    key = "key-of-alice-0123"
    server = make_server("--log-format", "json", "--access-log", "--api-keys", f"alice:{key}")
    auth = {"Authorization": f"Bearer {key}"}
    created = client.post(server.endpoint, headers={**TUS, **auth, "Upload-Length": "5",
                                                    "X-Request-Id": "create-1"})  # fmt: skip
    assert created.headers["x-request-id"] == "create-1"
    url = created.headers["location"]
    upload_id = url.rsplit("/", 1)[1]
    done = client.patch(
        url,
        content=b"hello",
        headers={
            **TUS,
            **auth,
            "Content-Type": OCTETS,
            "Upload-Offset": "0",
            "X-Request-Id": "patch-1",
        },
    )
    assert done.status_code == 204
    assert server.log_path is not None
    log_path = server.log_path

    def json_lines() -> list[dict[str, object]]:
        return [json.loads(line) for line in log_path.read_text().splitlines()
                if line.startswith("{")]  # fmt: skip

    # A request's access line is written once its answer has gone out: wait for it.
    deadline = time.monotonic() + 30
    while not any(line.get("request_id") == "patch-1" and line["logger"] == "haul.access"
                  for line in json_lines()):  # fmt: skip
        assert time.monotonic() < deadline, "no access line for the PATCH"
        time.sleep(0.05)
    lines = json_lines()
    by_request = {}
    for line in lines:
        assert {"time", "level", "logger", "message"} <= line.keys()
        by_request.setdefault(line.get("request_id"), []).append(line)
    creation = by_request["create-1"]
    assert any(line["message"].startswith("created upload") for line in creation)
    access = [line for line in by_request["patch-1"] if line["logger"] == "haul.access"]
    assert len(access) == 1
    assert access[0]["status"] == 204
    assert access[0]["bytes_received"] == 5
    assert access[0]["upload_id"] == upload_id
    assert access[0]["owner"] == "alice"
    assert access[0]["duration"] >= 0
    assert "error_code" not in access[0]  # only a refusal names one
    wrong = client.patch(url, content=b"!", headers={**TUS, **auth, "Content-Type": OCTETS,
                                                     "Upload-Offset": "0",
                                                     "X-Request-Id": "patch-2"})  # fmt: skip
    assert wrong.status_code == 409
    while not any(line.get("request_id") == "patch-2" for line in json_lines()):
        assert time.monotonic() < deadline, "no access line for the second PATCH"
        time.sleep(0.05)
    refused = [line for line in json_lines() if line.get("request_id") == "patch-2"
               and line["logger"] == "haul.access"]  # fmt: skip
    assert refused[0]["error_code"] == "ERR_MISMATCHED_OFFSET"
    assert refused[0]["message"].endswith(" 409 ERR_MISMATCHED_OFFSET")
    completed = [line for line in by_request["patch-1"] if "complete (" in line["message"]]
    assert completed[0]["upload_id"] == upload_id
    assert key not in server.log_path.read_text()  # credentials never reach a log


def test_metrics_move_with_a_real_cli_upload(make_server, tmp_path: Path) -> None:
    server = make_server("--metrics-token", "m")
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    scrape = {"Authorization": "Bearer m"}
    before = httpx.get(f"{server.url}/metrics", headers=scrape).text
    source = random_file(tmp_path / "data.bin", 3 * (1 << 20) + 17, seed=5)
    sent = subprocess.run(
        [HAUL, "upload", str(source), "--server", server.url, "--json", "--no-resume",
         "--parallel", "2", "--chunk-size", "1MiB"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    result = json.loads(sent.stdout.splitlines()[-1])
    after = httpx.get(f"{server.url}/metrics", headers=scrape).text
    assert metric(before, "haul_bytes_received_total") == 0
    assert metric(after, "haul_bytes_received_total") == source.stat().st_size
    assert metric(after, "haul_uploads_completed_total", kind="final") == 1
    assert metric(after, "haul_uploads_created_total", kind="partial") >= 3
    assert metric(after, "haul_active_uploads") == 0
    assert metric(after, "haul_requests_total", method="PATCH", status="204") >= 3
    finishes = metric(after, "haul_storage_operation_seconds_count",
                      backend="local", operation="concatenate")  # fmt: skip
    assert finishes == 1
    assert httpx.get(result["url"]).content == source.read_bytes()
    assert sha256_file(source) == result.get("sha256", sha256_file(source))


def test_haul_ls_lists_the_owners_uploads_on_the_server(make_server, tmp_path: Path) -> None:
    alice, bob = "alice-key-0123456789", "bob-key-0123456789ab"
    server = make_server("--api-keys", f"alice:{alice},bob:{bob}")
    files = [random_file(tmp_path / f"f{i}.bin", 1000 + i, seed=i) for i in range(3)]
    for source in files:
        sent = subprocess.run([HAUL, "upload", str(source), "--server", server.url, "--token",
                               alice, "--no-resume", "--json"], capture_output=True, text=True,
                              timeout=60)  # fmt: skip
        assert sent.returncode == 0, sent.stderr
    httpx.post(server.endpoint, headers={**TUS, "Authorization": f"Bearer {alice}",
                                         "Upload-Length": "10"})  # fmt: skip

    def ls(*options: str) -> list[dict[str, object]]:
        listed = subprocess.run([HAUL, "ls", "--server", server.url, "--json", *options],
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert listed.returncode == 0, listed.stderr
        return json.loads(listed.stdout)  # type: ignore[no-any-return]

    everything = ls("--token", alice)
    assert [item["length"] for item in everything] == [1000, 1001, 1002, 10]
    assert [item["metadata"]["filename"] for item in everything[:3]] == ["f0.bin", "f1.bin",
                                                                         "f2.bin"]  # fmt: skip
    assert [item["state"] for item in ls("--token", alice, "--state", "active")] == ["active"]
    assert ls("--token", bob) == []
    refused = subprocess.run([HAUL, "ls", "--server", server.url], capture_output=True,
                             text=True, timeout=60)  # fmt: skip
    assert refused.returncode == 1
    assert "ERR_UNAUTHORIZED" in refused.stderr
    assert "Traceback" not in refused.stderr
