"""The design note's chunk API over the in-process seam: chunks, resume, hashes, merge, owners,
and the multipart parser's edges (400, never 500)."""

from __future__ import annotations

import base64
import hashlib
import os
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from haul.core.lifecycle import Limits
from haul.core.service import UploadService
from haul.locks.memory import MemoryLocker
from haul.records.memory import MemoryStore
from haul.storage.local import LocalStorage
from tests.inprocess import Heard, asgi_client, memory_service, memory_settings

pytestmark = pytest.mark.fast

DATA = os.urandom(3 * 1000 + 17)
SIZE = 1000
CHUNKS = [DATA[i : i + SIZE] for i in range(0, len(DATA), SIZE)]
MD5 = hashlib.md5(DATA).hexdigest()


def client(**settings: object) -> httpx.AsyncClient:
    return asgi_client(memory_service(), memory_settings(**settings))


async def send(
    http: httpx.AsyncClient,
    index: int,
    file_hash: str = MD5,
    chunk: bytes | None = None,
    prefix: str = "",
    **extra: str,
) -> httpx.Response:
    body = CHUNKS[index] if chunk is None else chunk
    fields = {"index": str(index), "fileHash": file_hash, **extra}
    files = {"chunk": ("blob", body, "application/octet-stream")}
    return await http.post(f"{prefix}/upload-chunk", data=fields, files=files)


async def test_the_notes_flow_resumes_merges_and_reports_the_file() -> None:
    async with client() as http:
        assert (await http.get("/exist", params={"fileHash": MD5})).json() == {
            "exists": False,
            "url": None,
            "uploadedChunks": [],
        }
        for index in (2, 0):
            answer = await send(http, index)
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"index": index, "size": len(CHUNKS[index])}
        assert (await send(http, 0)).json() == {"index": 0, "size": SIZE}  # again: accepted
        held = (await http.get("/exist", params={"fileHash": MD5})).json()["uploadedChunks"]
        assert held == [0, 2]
        early = await http.post("/merge", json={"fileHash": MD5, "fileName": "a.bin"})
        assert early.status_code == 409
        assert early.json()["missing"] == [1]
        short = await http.post(
            "/merge", json={"fileHash": MD5, "fileName": "a.bin", "totalChunks": 4}
        )
        assert short.json()["missing"] == [1, 3]
        for index in (1, 3):
            assert (
                await send(http, index, chunkHash=hashlib.md5(CHUNKS[index]).hexdigest())
            ).is_success
        merged = await http.post("/merge", json={"fileHash": MD5, "fileName": "a.bin"})
        assert merged.status_code == 200, merged.text
        result = merged.json()
        assert result["size"] == len(DATA)
        assert result["sha256"] == hashlib.sha256(DATA).hexdigest()
        again = await http.post("/merge", json={"fileHash": MD5, "fileName": "a.bin"})
        assert again.json() == result
        exist = (await http.get("/exist", params={"fileHash": MD5})).json()
        assert exist == {"exists": True, "url": result["url"], "uploadedChunks": []}
        ranged = await http.get(result["url"], headers={"Range": "bytes=10-1500"})
        assert ranged.status_code == 206
        assert ranged.content == DATA[10:1501]
        assert (
            await http.delete(result["url"], headers={"Tus-Resumable": "1.0.0"})
        ).status_code == 204


async def test_a_wrong_chunk_hash_is_refused_and_nothing_is_kept() -> None:
    async with client() as http:
        answer = await send(http, 0, chunkHash="0" * 32)
        assert answer.status_code == 400
        assert "chunkHash" in answer.text
        held = (await http.get("/exist", params={"fileHash": MD5})).json()["uploadedChunks"]
        assert held == []
        assert (await send(http, 0, chunkHash=hashlib.md5(CHUNKS[0]).hexdigest())).is_success


async def test_a_merge_whose_bytes_do_not_hash_to_the_file_hash_is_refused() -> None:
    async with client() as http:
        for index in range(len(CHUNKS)):
            chunk = b"x" * len(CHUNKS[index]) if index == 1 else None
            assert (await send(http, index, chunk=chunk)).is_success
        merged = await http.post("/merge", json={"fileHash": MD5, "fileName": "a.bin"})
        assert merged.status_code == 422
        assert (await http.get("/exist", params={"fileHash": MD5})).json()["uploadedChunks"] == []


async def test_a_sha256_file_hash_is_verified_too() -> None:
    sha = hashlib.sha256(DATA).hexdigest()
    async with client() as http:
        for index in range(len(CHUNKS)):
            assert (await send(http, index, file_hash=sha)).is_success
        merged = await http.post("/merge", json={"fileHash": sha, "fileName": "a.bin"})
        assert merged.status_code == 200, merged.text
        assert merged.json()["sha256"] == sha


async def test_another_owner_sees_nothing_of_yours() -> None:
    async with client(api_keys="alice:alice-token-0123456789,bob:bob-token-0123456789") as http:
        alice = {"Authorization": "Bearer alice-token-0123456789"}
        bob = {"Authorization": "Bearer bob-token-0123456789"}
        http.headers.update(alice)
        for index in range(len(CHUNKS)):
            assert (await send(http, index)).is_success
        assert (await http.post("/merge", json={"fileHash": MD5, "fileName": "a"})).is_success
        seen = await http.get("/exist", params={"fileHash": MD5}, headers=bob)
        assert seen.json() == {"exists": False, "url": None, "uploadedChunks": []}
        merge = await http.post("/merge", json={"fileHash": MD5, "fileName": "a"}, headers=bob)
        assert merge.status_code == 409
        anonymous = await http.get(
            "/exist", params={"fileHash": MD5}, headers={"Authorization": ""}
        )
        assert anonymous.status_code == 401


async def test_the_prefix_moves_the_paths_and_the_api_can_be_off() -> None:
    async with client(chunk_api_prefix="/api") as http:
        assert (await send(http, 0, prefix="/api")).is_success
        assert (await send(http, 0)).status_code == 404
    async with client(chunk_api="false") as http:
        assert (await send(http, 0)).status_code == 404


async def test_fields_after_the_chunk_are_honoured() -> None:
    boundary = "b0undary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="chunk"; filename="b"\r\n\r\n'
        ).encode()
        + CHUNKS[0]
        + (
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="index"\r\n\r\n0'
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="fileHash"\r\n\r\n{MD5}'
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="chunkHash"\r\n\r\n'
            f"{'f' * 32}\r\n--{boundary}--\r\n"
        ).encode()
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    async with client() as http:
        refused = await http.post("/upload-chunk", content=body, headers=headers)
        assert refused.status_code == 400
        good = body.replace(b"f" * 32, hashlib.md5(CHUNKS[0]).hexdigest().encode())
        accepted = await http.post("/upload-chunk", content=good, headers=headers)
        assert accepted.json() == {"index": 0, "size": SIZE}


@pytest.mark.parametrize(
    ("content_type", "body", "words"),
    [
        ("application/json", b"{}", "multipart/form-data"),
        ("multipart/form-data", b"", "boundary"),
        ("multipart/form-data; boundary=x", b"--x\r\n", "ended"),
        ("multipart/form-data; boundary=x", b"--x--\r\n", "chunk"),
        ("multipart/form-data; boundary=x", b"garbage", "malformed"),
        (
            "multipart/form-data; boundary=x",
            b'--x\r\nContent-Disposition: form-data; name="fileHash"\r\n\r\n'
            + b"a" * 10_000
            + b"\r\n--x--\r\n",
            "longer",
        ),
        (
            "multipart/form-data; boundary=x",
            b'--x\r\nContent-Disposition: form-data; name="chunk"\r\n\r\nab\r\n--x--\r\n',
            "index and fileHash",
        ),
        (
            "multipart/form-data; boundary=x",
            b"--x\r\nContent-Type: text/plain\r\n\r\nab\r\n--x--\r\n",
            "Content-Disposition",
        ),
    ],
)
async def test_malformed_forms_are_refused_in_words(
    content_type: str, body: bytes, words: str
) -> None:
    async with client() as http:
        answer = await http.post(
            "/upload-chunk", content=body, headers={"Content-Type": content_type}
        )
        assert answer.status_code == 400, answer.text
        assert words in answer.text


@pytest.mark.parametrize(
    "fields",
    [
        {"index": "-1", "fileHash": MD5},
        {"index": "x", "fileHash": MD5},
        {"index": "0", "fileHash": "zz"},
        {"index": "5", "fileHash": MD5, "totalChunks": "5"},
    ],
)
async def test_bad_fields_are_refused(fields: dict[str, str]) -> None:
    async with client() as http:
        files = {"chunk": ("b", b"ab", "application/octet-stream")}
        answer = await http.post("/upload-chunk", data=fields, files=files)
        assert answer.status_code == 400, answer.text


@pytest.mark.parametrize(
    "payload",
    [b"not json", b"[]", b'{"fileHash": "ab"}', b'{"fileHash": "' + MD5.encode() + b'"}'],
)
async def test_bad_merge_requests_are_refused(payload: bytes) -> None:
    async with client() as http:
        answer = await http.post("/merge", content=payload)
        assert answer.status_code == 400, answer.text


async def test_chunks_never_merged_expire_and_can_be_sent_again() -> None:
    service = memory_service(Limits(expiration=60))
    async with asgi_client(service) as http:
        assert (await send(http, 0)).is_success
        report = await service.collect_garbage(now=time.time() + 3600)
        assert report.expired == 1
        exist = await http.get("/exist", params={"fileHash": MD5})
        assert exist.json()["uploadedChunks"] == []
        assert (await send(http, 0)).json() == {"index": 0, "size": SIZE}
        exist = await http.get("/exist", params={"fileHash": MD5})
        assert exist.json()["uploadedChunks"] == [0]


async def test_the_merge_is_judged_by_the_type_policy_and_told_to_listeners() -> None:
    settings = memory_settings(allowed_types=".txt")
    service = memory_service(policy=settings.type_policy())
    heard = Heard()
    service.events.subscribe(heard)
    async with asgi_client(service, settings) as http:
        for index in range(len(CHUNKS)):
            assert (await send(http, index)).is_success
        refused = await http.post("/merge", json={"fileHash": MD5, "fileName": "a.exe"})
        assert refused.status_code == 415
        for index in range(len(CHUNKS)):
            assert (await send(http, index)).is_success
        merged = await http.post("/merge", json={"fileHash": MD5, "fileName": "a.txt"})
        assert merged.status_code == 200, merged.text
    finished = [e for e in heard.events if type(e).__name__ == "Finished" and e.upload.is_final]
    assert len(finished) == 1
    assert finished[0].upload.length == len(DATA)


async def test_a_merge_with_total_chunks_finds_chunks_far_apart() -> None:
    far = 250  # beyond the first hundred indexes in a row that are not held
    async with client() as http:
        assert (await send(http, 0, chunk=b"a")).is_success
        assert (await send(http, far, chunk=b"b")).is_success
        merged = await http.post(
            "/merge", json={"fileHash": MD5, "fileName": "a", "totalChunks": far + 1}
        )
        assert merged.status_code == 409
        assert merged.json()["missing"] == list(range(1, far))


async def test_a_chunk_is_streamed_into_storage_not_held_in_memory(tmp_path: Path) -> None:
    size = 48 * 1024 * 1024
    piece = b"z" * 65536
    boundary = "streamed"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="index"\r\n\r\n0\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="fileHash"\r\n\r\n{MD5}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="chunk"; filename="b"\r\n\r\n'
    ).encode()

    async def form() -> AsyncIterator[bytes]:
        yield head
        for _ in range(size // len(piece)):
            yield piece
        yield f"\r\n--{boundary}--\r\n".encode()

    service = UploadService(
        LocalStorage(tmp_path, fsync=False), MemoryStore(), MemoryLocker(), Limits()
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    async with asgi_client(service) as http:
        tracemalloc.start()
        try:
            answer = await http.post("/upload-chunk", content=form(), headers=headers)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert answer.json() == {"index": 0, "size": size}
    assert peak < size / 6, peak  # a few blocks in flight, never the chunk


async def test_a_merged_file_is_an_instant_upload_for_tus_clients() -> None:
    async with client(api_keys="carol:carol-key-0123456789") as http:
        http.headers["Authorization"] = "Bearer carol-key-0123456789"
        for index in range(len(CHUNKS)):
            assert (await send(http, index)).is_success
        assert (await http.post("/merge", json={"fileHash": MD5, "fileName": "a"})).is_success
        digest = base64.b64encode(hashlib.sha256(DATA).digest()).decode()
        created = await http.post(
            "/files/",
            headers={
                "Tus-Resumable": "1.0.0",
                "Upload-Length": str(len(DATA)),
                "Repr-Digest": f"sha-256=:{digest}:",
            },
        )
        assert created.status_code == 201
        assert created.headers["upload-offset"] == str(len(DATA))
