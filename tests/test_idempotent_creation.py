"""Idempotent creation: a POST sent again with its Idempotency-Key (because its answer was lost)
answers with the upload the first one made, never a second upload, against a real server."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.helpers import OCTETS, TUS, HaulServer, head, patch
from tests.test_auth import ALICE_KEY, BOB_KEY, bearer


def post(client: httpx.Client, server: HaulServer, key: str, length: int = 11, **headers: str):
    return client.post(
        server.endpoint,
        headers={**TUS, "Upload-Length": str(length), "Idempotency-Key": key, **headers},
    )


def created_count(server: HaulServer) -> int:
    assert server.log_path is not None
    return server.log_path.read_text().count("created upload ")


def test_a_repeated_creation_answers_with_the_same_upload(server, client: httpx.Client) -> None:
    first = post(client, server, '"k-1"', **{"Upload-Metadata": "filename YS50eHQ="})
    assert first.status_code == 201, first.text
    url = first.headers["location"]
    assert patch(client, url, 0, b"hello").headers["upload-offset"] == "5"
    again = post(client, server, '"k-1"', **{"Upload-Metadata": "filename YS50eHQ="})
    assert again.status_code == 201, again.text
    assert again.headers["location"] == url
    assert again.headers["upload-offset"] == "5"  # where the client goes on
    assert created_count(server) == 1
    assert patch(client, url, 5, b" world").status_code == 204
    assert client.get(url).content == b"hello world"
    # The bare form of the key (no quotes) is the same key.
    assert (
        post(client, server, "k-1", **{"Upload-Metadata": "filename YS50eHQ="}).headers["location"]
        == url
    )
    # Another key is another upload.
    assert post(client, server, '"k-2"').headers["location"] != url


def test_a_key_sent_with_a_different_request_is_refused(server, client: httpx.Client) -> None:
    url = post(client, server, '"k-3"').headers["location"]
    for changed in (
        {"Upload-Length": "12"},
        {"Upload-Metadata": "filename Yi50eHQ="},
        {"Upload-Concat": "partial"},
    ):
        refused = client.post(
            server.endpoint,
            headers={**TUS, "Upload-Length": "11", "Idempotency-Key": '"k-3"', **changed},
        )
        assert refused.status_code == 422, changed
        assert refused.text.startswith("ERR_IDEMPOTENCY_KEY_REUSED: ")
    assert head(client, url).headers["upload-offset"] == "0"  # the first upload is untouched
    assert created_count(server) == 1


def test_the_key_of_a_terminated_upload_answers_410(server, client: httpx.Client) -> None:
    url = post(client, server, '"k-4"').headers["location"]
    assert client.delete(url, headers=TUS).status_code == 204
    gone = post(client, server, '"k-4"')
    assert gone.status_code == 410
    assert gone.text.startswith("ERR_UPLOAD_GONE: ")
    assert "Idempotency-Key" in gone.text


def test_keys_belong_to_their_owner(make_server, client: httpx.Client) -> None:
    server = make_server("--api-keys", f"alice:{ALICE_KEY},bob:{BOB_KEY}")
    headers = {"Upload-Length": "3", "Idempotency-Key": '"same"'}
    alice = client.post(server.endpoint, headers={**bearer(ALICE_KEY), **headers})
    bob = client.post(server.endpoint, headers={**bearer(BOB_KEY), **headers})
    assert alice.status_code == bob.status_code == 201
    assert alice.headers["location"] != bob.headers["location"]
    assert client.head(bob.headers["location"], headers=bearer(ALICE_KEY)).status_code == 404


def test_twin_requests_at_once_make_one_upload(server) -> None:
    def create(_: int) -> tuple[int, str]:
        with httpx.Client(trust_env=False, timeout=30) as own:
            answer = post(own, server, '"twins"', length=1000)
            return answer.status_code, answer.headers.get("location", answer.text)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(create, range(16)))
    assert {status for status, _ in answers} == {201}, answers
    assert len({location for _, location in answers}) == 1
    assert created_count(server) == 1


def test_a_repeated_creation_with_upload_keeps_the_first_bytes(
    server, client: httpx.Client
) -> None:
    def create_with(body: bytes) -> httpx.Response:
        return client.post(
            server.endpoint,
            content=body,
            headers={
                **TUS,
                "Upload-Length": "11",
                "Idempotency-Key": '"k-5"',
                "Content-Type": OCTETS,
            },
        )

    first = create_with(b"hello")
    assert first.headers["upload-offset"] == "5"
    again = create_with(b"HELLO")  # the same request with other bytes: they are not taken
    assert again.status_code == 201
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["upload-offset"] == "5"
    url = first.headers["location"]
    assert patch(client, url, 5, b" world").status_code == 204
    assert client.get(url).content == b"hello world"


@pytest.mark.parametrize(
    "key", ["", '""', '"', "a b", '"a\\"b"', "é", "x" * 256, '"' + "x" * 256 + '"']
)
def test_malformed_keys_are_400(server, client: httpx.Client, key: str) -> None:
    refused = client.post(
        server.endpoint,
        headers={**TUS, "Upload-Length": "1", "Idempotency-Key": key.encode()},
    )
    assert refused.status_code == 400, refused.text
    assert refused.text.startswith("ERR_INVALID_HEADER: ")
    assert created_count(server) == 0
