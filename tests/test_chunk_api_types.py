"""The type policy on the note's chunk API and on /flow, against a real `haul serve`: the file's
kind is judged from chunk 0's bytes as they arrive (and from its name as soon as it is given),
so a denied kind is refused at once with 415 ERR_TYPE_NOT_ALLOWED, not only at the merge."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

import httpx
import pytest

from tests.helpers import HaulServer

MiB = 1 << 20
PDF = b"%PDF-1.7\n" + os.urandom(MiB)  # a denied kind by its bytes, whatever it is called
ELF = b"\x7fELF\x02\x01\x01" + os.urandom(MiB)
PLAIN = os.urandom(MiB)


@pytest.fixture
def http() -> httpx.Client:
    return httpx.Client(timeout=60, trust_env=False)


def send(
    http: httpx.Client, server: HaulServer, index: int, chunk: bytes, file_hash: str, **more: str
) -> httpx.Response:
    fields = {"index": str(index), "fileHash": file_hash, **more}
    files = {"chunk": ("blob", chunk, "application/octet-stream")}
    return http.post(f"{server.url}/upload-chunk", data=fields, files=files)


def held(http: httpx.Client, server: HaulServer, file_hash: str) -> list[int]:
    answer = http.get(f"{server.url}/exist", params={"fileHash": file_hash})
    assert answer.status_code == 200
    return list(answer.json()["uploadedChunks"])


def assert_refused(answer: httpx.Response, words: str) -> None:
    assert answer.status_code == 415, answer.text
    assert answer.text.startswith("ERR_TYPE_NOT_ALLOWED: "), answer.text
    assert words in answer.text


def test_chunk_0_of_a_denied_kind_is_refused_as_it_arrives_and_nothing_is_kept(
    make_server: Callable[..., HaulServer], http: httpx.Client
) -> None:
    server = make_server("--denied-types", "application/pdf")
    file_hash = hashlib.md5(PDF + PLAIN).hexdigest()
    # Chunk 1 is not the file's beginning: the kind is not told by its bytes.
    assert send(http, server, 1, PLAIN, file_hash).status_code == 200
    assert_refused(send(http, server, 0, PDF, file_hash), "application/pdf, a denied type")
    assert held(http, server, file_hash) == [1]
    merge = http.post(f"{server.url}/merge", json={"fileHash": file_hash, "fileName": "x"})
    assert merge.status_code == 409
    assert merge.json()["missing"] == [0]
    # A file whose first bytes are an allowed kind goes through, named or not.
    other = hashlib.md5(PLAIN + PDF).hexdigest()
    assert send(http, server, 0, PLAIN, other, fileName="notes.bin").status_code == 200
    assert send(http, server, 1, PDF, other).status_code == 200
    merged = http.post(f"{server.url}/merge", json={"fileHash": other, "fileName": "notes.bin"})
    assert merged.status_code == 200, merged.text
    assert merged.json()["size"] == len(PLAIN + PDF)


def test_an_executable_chunk_0_or_a_denied_name_is_refused_before_the_merge(
    make_server: Callable[..., HaulServer], http: httpx.Client
) -> None:
    server = make_server("--allowed-types", ".bin,.txt", "--denied-types", ".pdf")
    file_hash = hashlib.md5(ELF).hexdigest()
    assert_refused(send(http, server, 0, ELF, file_hash), "executables are refused")
    assert held(http, server, file_hash) == []
    named = hashlib.md5(PLAIN).hexdigest()
    for index in (0, 3):  # the name is judged on any chunk that carries it
        refused = send(http, server, index, PLAIN, named, fileName="report.pdf")
        assert_refused(refused, "is a denied kind of file (.pdf)")
    assert held(http, server, named) == []
    # The connection stays usable: the refusal was an answer, not a cut.
    assert send(http, server, 0, PLAIN, named, fileName="data.bin").status_code == 200
    assert held(http, server, named) == [0]


def test_flow_judges_chunk_1_as_it_arrives(
    make_server: Callable[..., HaulServer], http: httpx.Client
) -> None:
    server = make_server("--denied-types", "application/pdf")
    data = PDF + PLAIN  # two chunks of just over 1 MiB: the last one takes the rest
    chunk_size = len(PDF)
    params = {
        "flowChunkSize": str(chunk_size), "flowTotalSize": str(len(data)),
        "flowIdentifier": "report", "flowFilename": "report.bin", "flowTotalChunks": "2",
    }  # fmt: skip

    def post(number: int) -> httpx.Response:
        piece = data[(number - 1) * chunk_size : number * chunk_size]
        fields = {**params, "flowChunkNumber": str(number), "flowCurrentChunkSize": str(len(piece))}
        files = {"file": ("blob", piece, "application/octet-stream")}
        return http.post(f"{server.url}/flow", data=fields, files=files)

    assert_refused(post(1), "application/pdf, a denied type")
    test = {**params, "flowChunkNumber": "1", "flowCurrentChunkSize": str(chunk_size)}
    assert http.get(f"{server.url}/flow", params=test).status_code == 204  # nothing held
    assert post(2).status_code == 200
