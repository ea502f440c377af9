"""tus-js-client speaking the IETF resumable-upload drafts (-03 = interop 5, -05 = interop 6)
against a real `haul serve`, including a server killed -9 mid-upload and started again."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.helpers import JS_DIR, HaulServer, env_without_proxy, random_file, sha256_file

MiB = 1 << 20
PROTOCOLS = ("ietf-draft-03", "ietf-draft-05")


def _node(options: dict[str, object]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["node", str(JS_DIR / "ietf_upload.mjs"), json.dumps(options)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_without_proxy(),
    )


def _result(proc: subprocess.Popen[str], timeout: float = 300) -> dict[str, object]:
    out, err = proc.communicate(timeout=timeout)
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert lines, f"no output from tus-js-client; stderr: {err[-2000:]}"
    return lines[-1]  # type: ignore[no-any-return]


def _download(url: str) -> httpx.Response:
    return httpx.get(url, timeout=120, trust_env=False)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    "options",
    [{}, {"chunkSize": 3 * MiB}, {"uploadDataDuringCreation": True, "chunkSize": 5 * MiB}],
    ids=["single-request", "chunked", "data-during-creation"],
)
def test_tus_js_client_uploads_by_the_draft(
    server: HaulServer, tmp_path: Path, protocol: str, options: dict[str, object]
) -> None:
    source = random_file(tmp_path / "source.bin", 12 * MiB + 77, seed=21)
    result = _result(
        _node({"file": str(source), "endpoint": server.endpoint, "protocol": protocol, **options})
    )
    assert "url" in result, result
    got = _download(str(result["url"]))
    assert hashlib.sha256(got.content).hexdigest() == sha256_file(source)
    assert "source.bin" in got.headers["content-disposition"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_tus_js_client_by_the_draft_survives_server_kill_9(
    make_server: Callable[..., HaulServer], tmp_path: Path, protocol: str
) -> None:
    source = random_file(tmp_path / "source.bin", 128 * MiB, seed=22)
    server = make_server()
    proc = _node({"file": str(source), "endpoint": server.endpoint, "protocol": protocol,
                  "chunkSize": 8 * MiB})  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:  # wait until a good part has been sent
        if json.loads(line).get("progress", 0) >= 24 * MiB:
            break
    server.kill()
    assert proc.poll() is None  # the client is retrying: it cannot finish without the server
    server.start()
    result = _result(proc)
    assert "url" in result, result
    got = _download(str(result["url"]))
    assert hashlib.sha256(got.content).hexdigest() == sha256_file(source)
