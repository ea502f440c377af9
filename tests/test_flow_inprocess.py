"""/flow over the in-process seam, as flow.js and Resumable.js send it: test GETs (200 / 204,
never 404), multipart and octet chunks, a last chunk up to just under twice the chunk size, the
assembled upload's URL in the last answer, bad parameters refused with 400."""

from __future__ import annotations

import asyncio
import hashlib
import os

import httpx
import pytest

from tests.inprocess import asgi_client, memory_service, memory_settings

pytestmark = pytest.mark.fast

CHUNK = 1000
DATA = os.urandom(3 * CHUNK + 999)  # three chunks: the last one takes 1,999 bytes
TOTAL = max(len(DATA) // CHUNK, 1)


def client(**settings: object) -> httpx.AsyncClient:
    return asgi_client(memory_service(), memory_settings(**settings))


def piece(number: int, data: bytes = DATA, chunk: int = CHUNK) -> bytes:
    total = max(len(data) // chunk, 1)
    end = len(data) if number == total else number * chunk
    return data[(number - 1) * chunk : end]


def params(
    number: int, prefix: str = "flow", data: bytes = DATA, chunk: int = CHUNK
) -> dict[str, str]:
    return {
        f"{prefix}ChunkNumber": str(number),
        f"{prefix}ChunkSize": str(chunk),
        f"{prefix}CurrentChunkSize": str(len(piece(number, data, chunk))),
        f"{prefix}TotalSize": str(len(data)),
        f"{prefix}Identifier": f"{len(data)}-report-pdf",
        f"{prefix}Filename": "report.pdf",
        f"{prefix}RelativePath": "report.pdf",
        f"{prefix}TotalChunks": str(max(len(data) // chunk, 1)),
    }


async def post(http: httpx.AsyncClient, number: int, prefix: str = "flow") -> httpx.Response:
    files = {"file": ("blob", piece(number), "application/octet-stream")}
    return await http.post("/flow", data=params(number, prefix), files=files)


@pytest.mark.parametrize("prefix", ["flow", "resumable"])
async def test_a_file_in_chunks_is_assembled_by_the_last_one(prefix: str) -> None:
    async with client() as http:
        assert (await http.get("/flow", params=params(2, prefix))).status_code == 204
        for number in (3, 1):
            answer = await post(http, number, prefix)
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"chunk": number, "size": len(piece(number))}
        assert (await http.get("/flow", params=params(1, prefix))).status_code == 200
        assert (await http.get("/flow", params=params(2, prefix))).status_code == 204
        last = await post(http, 2, prefix)
        assert last.status_code == 200, last.text
        url = last.json()["url"]
        assert last.json()["sha256"] == hashlib.sha256(DATA).hexdigest()
        assert (await http.get(url)).content == DATA
        for number in range(1, TOTAL + 1):  # the same file again sends nothing
            assert (await http.get("/flow", params=params(number, prefix))).status_code == 200
        assert (await post(http, 2, prefix)).json()["url"] == url


async def test_octet_chunks_carry_their_parameters_in_the_query() -> None:
    async with client() as http:
        for number in range(1, TOTAL + 1):
            answer = await http.post(
                "/flow",
                params=params(number),
                content=piece(number),
                headers={"Content-Type": "application/octet-stream"},
            )
            assert answer.status_code == 200, answer.text
        assert (await http.get(answer.json()["url"])).content == DATA


async def test_a_short_or_long_chunk_is_refused_and_not_kept() -> None:
    async with client() as http:
        short = await http.post("/flow", params=params(1), content=piece(1)[:-1])
        assert short.status_code == 400
        assert "999 of its 1000" in short.text
        long = await http.post("/flow", params=params(1), content=piece(1) + b"x")
        assert long.status_code == 400
        assert (await http.get("/flow", params=params(1))).status_code == 204


async def test_chunks_of_one_owner_are_not_anothers() -> None:
    keys = "alice:alice-key-0123456789,bob:bob-key-0123456789"
    async with client(api_keys=keys) as http:
        http.headers["Authorization"] = "Bearer alice-key-0123456789"
        assert (await post(http, 1)).is_success
        bob = {"Authorization": "Bearer bob-key-0123456789"}
        assert (await http.get("/flow", params=params(1), headers=bob)).status_code == 204


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"flowChunkNumber": "0"}, "flowChunkNumber"),
        ({"flowChunkNumber": "4"}, "beyond"),
        ({"flowTotalChunks": "7"}, "does not fit"),
        ({"flowCurrentChunkSize": "5"}, "must be 1000"),
        ({"flowChunkSize": "x"}, "whole number"),
        ({"flowIdentifier": ""}, "Identifier"),
        ({"flowTotalSize": None}, "missing"),
        ({"flowChunkNumber": None}, "missing"),
    ],
)
async def test_bad_parameters_are_refused_in_words(
    change: dict[str, str | None], words: str
) -> None:
    asked = {**params(1), **change}
    query = {k: v for k, v in asked.items() if v is not None}
    async with client() as http:
        tested = await http.get("/flow", params=query)
        assert tested.status_code == 400
        assert words in tested.text
        sent = await http.post("/flow", params=query, content=piece(1))
        assert sent.status_code == 400


async def test_an_empty_file_is_one_empty_chunk() -> None:
    async with client() as http:
        answer = await http.post("/flow", params=params(1, data=b""), content=b"")
        assert answer.status_code == 200, answer.text
        assert answer.json()["size"] == 0


async def test_the_last_two_chunks_arriving_at_once_make_one_upload() -> None:
    async with client() as http:
        assert (await post(http, 1)).is_success
        answers = await asyncio.gather(post(http, 2), post(http, 3))
        assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
        urls = {a.json()["url"] for a in answers if "url" in a.json()}
        assert len(urls) == 1
        assert (await http.get(urls.pop())).content == DATA
