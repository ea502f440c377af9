"""GET /exist as the note's instant upload: true when the caller already holds the content, with
its URL: for a SHA-256 fileHash however the content came (tus, /flow, the note's merge), for an
MD5 one when it was merged through the note's API; never for another owner's content."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from tests import test_flow_inprocess as flow
from tests.inprocess import asgi_client, memory_service, memory_settings
from tests.test_chunk_api_inprocess import CHUNKS, DATA, MD5, send

pytestmark = pytest.mark.fast

SHA256 = hashlib.sha256(DATA).hexdigest()
KEYS = "alice:alice-token-0123456789,bob:bob-token-0123456789"
ALICE = {"Authorization": "Bearer alice-token-0123456789"}
BOB = {"Authorization": "Bearer bob-token-0123456789"}
TUS = {"Tus-Resumable": "1.0.0"}


def client() -> httpx.AsyncClient:
    return asgi_client(memory_service(), memory_settings(api_keys=KEYS))


async def exist(http: httpx.AsyncClient, file_hash: str, headers: dict[str, str]) -> object:
    answer = await http.get("/exist", params={"fileHash": file_hash}, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


def held(url: str) -> dict[str, object]:
    return {"exists": True, "url": url, "uploadedChunks": []}


NOTHING = {"exists": False, "url": None, "uploadedChunks": []}


async def tus_upload(http: httpx.AsyncClient, data: bytes, **headers: str) -> str:
    created = await http.post(
        "/files/",
        content=data,
        headers={
            **TUS,
            **ALICE,
            "Upload-Length": str(len(data)),
            "Content-Type": "application/offset+octet-stream",
            **headers,
        },
    )
    assert created.status_code == 201, created.text
    assert created.headers["upload-offset"] == str(len(data))
    return str(httpx.URL(str(http.base_url)).join(created.headers["location"]))


async def test_content_uploaded_with_tus_exists_for_its_sha256_and_only_for_its_owner() -> None:
    async with client() as http:
        assert await exist(http, SHA256, ALICE) == NOTHING
        url = await tus_upload(http, DATA)
        assert await exist(http, SHA256, ALICE) == held(url)
        assert await exist(http, SHA256, BOB) == NOTHING  # bob learns nothing of alice's files
        anonymous = await http.get("/exist", params={"fileHash": SHA256})
        assert anonymous.status_code == 401
        # An MD5 names content only through the note's merge: tus never declared one.
        assert await exist(http, MD5, ALICE) == NOTHING
        assert (await http.delete(url, headers={**TUS, **ALICE})).status_code == 204
        assert await exist(http, SHA256, ALICE) == NOTHING  # gone is not held


async def test_a_partial_upload_is_not_a_file_the_caller_holds() -> None:
    async with client() as http:
        await tus_upload(http, DATA, **{"Upload-Concat": "partial"})
        assert await exist(http, SHA256, ALICE) == NOTHING


async def test_content_uploaded_through_flow_exists_for_its_sha256() -> None:
    async with client() as http:
        http.headers.update(ALICE)
        for number in range(1, flow.TOTAL + 1):
            files = {"file": ("blob", flow.piece(number), "application/octet-stream")}
            answer = await http.post("/flow", data=flow.params(number), files=files)
            assert answer.status_code == 200, answer.text
        url = answer.json()["url"]
        sha256 = hashlib.sha256(flow.DATA).hexdigest()
        assert await exist(http, sha256, ALICE) == held(url)
        assert await exist(http, sha256, BOB) == NOTHING


async def test_a_merged_file_exists_for_its_md5_and_for_its_sha256() -> None:
    async with client() as http:
        http.headers.update(ALICE)
        for index in range(len(CHUNKS)):
            assert (await send(http, index)).is_success
        merged = await http.post("/merge", json={"fileHash": MD5, "fileName": "a.bin"})
        assert merged.status_code == 200, merged.text
        url = merged.json()["url"]
        assert await exist(http, MD5, ALICE) == held(url)
        assert await exist(http, SHA256, ALICE) == held(url)
        assert await exist(http, MD5, BOB) == NOTHING
        assert await exist(http, SHA256, BOB) == NOTHING
