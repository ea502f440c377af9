"""The design note's own client flow (Node's fetch + FormData, SparkMD5 from npm) against a real
`haul serve`: resume from uploadedChunks, a wrong chunkHash, a merge whose bytes do not match,
/exist after the merge, and owners kept apart."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import JS_DIR, HaulServer, env_without_proxy, random_file

CHUNK = 256 * 1024
ALICE = "alice-key-0123456789"
BOB = "bob-key-0123456789"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HaulServer]:
    data: Path = tmp_path_factory.mktemp("note")
    running = HaulServer(
        data_dir=data / "data", extra=["--api-keys", f"alice:{ALICE},bob:{BOB}"]
    ).start()
    yield running
    running.stop()


def note_client(server: HaulServer, file: Path, token: str = ALICE, **options: Any) -> list[Any]:
    asked = {"base": server.url, "file": str(file), "chunkSize": CHUNK, "token": token, **options}
    done = subprocess.run(
        ["node", str(JS_DIR / "note_chunks.mjs"), json.dumps(asked)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env_without_proxy(),
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def one(lines: list[Any], key: str) -> Any:
    found = [line for line in lines if key in line]
    assert len(found) == 1, lines
    return found[0]


def sent(lines: list[Any]) -> dict[int, int]:
    return {line["sent"]: line["status"] for line in lines if "sent" in line}


def test_an_interrupted_upload_resumes_from_uploaded_chunks_and_merges(
    server: HaulServer, tmp_path: Path
) -> None:
    file = random_file(tmp_path / "movie.bin", 5 * CHUNK + 1234)
    md5 = hashlib.md5(file.read_bytes()).hexdigest()
    first = note_client(server, file, stopAfter=2)
    assert one(first, "fileHash")["fileHash"] == md5
    assert sent(first) == {0: 200, 1: 200}
    second = note_client(server, file)
    assert one(second, "exist")["exist"]["uploadedChunks"] == [0, 1]
    assert sent(second) == {2: 200, 3: 200, 4: 200, 5: 200}
    merge = one(second, "merge")
    assert merge["merge"] == 200, merge
    merged = json.loads(merge["body"])
    assert merged["size"] == file.stat().st_size
    assert merged["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
    auth = {"Authorization": f"Bearer {ALICE}"}
    download = httpx.get(merged["url"], headers=auth, trust_env=False)
    assert download.content == file.read_bytes()
    again = note_client(server, file)  # /exist after the merge: the instant upload
    assert one(again, "instant")["instant"] == merged["url"]
    assert sent(again) == {}
    bob = note_client(server, file, token=BOB, stopAfter=0)  # another owner: nothing of alice's
    assert one(bob, "exist")["exist"] == {"exists": False, "url": None, "uploadedChunks": []}
    stranger = httpx.get(merged["url"], headers={"Authorization": f"Bearer {BOB}"}, trust_env=False)
    assert stranger.status_code == 404


def test_a_wrong_chunk_hash_is_refused_and_the_merge_names_it_missing(
    server: HaulServer, tmp_path: Path
) -> None:
    file = random_file(tmp_path / "a.bin", 3 * CHUNK, seed=1)
    lines = note_client(server, file, wrongChunkHash=1)
    assert sent(lines) == {0: 200, 1: 400, 2: 200}
    merge = one(lines, "merge")
    assert merge["merge"] == 409
    assert json.loads(merge["body"])["missing"] == [1]
    retry = note_client(server, file)
    assert sent(retry) == {1: 200}
    assert one(retry, "merge")["merge"] == 200


def test_a_merge_whose_bytes_do_not_match_the_file_hash_is_refused(
    server: HaulServer, tmp_path: Path
) -> None:
    file = random_file(tmp_path / "b.bin", 3 * CHUNK, seed=2)
    lines = note_client(server, file, corrupt=2)
    assert sent(lines) == {0: 200, 1: 200, 2: 200}  # each chunk matches its own chunkHash
    merge = one(lines, "merge")
    assert merge["merge"] == 422, merge
    assert "fileHash" in merge["body"]
    after = note_client(server, file, stopAfter=0)  # nothing of the refused file is kept
    assert one(after, "exist")["exist"]["uploadedChunks"] == []
