"""Upload ids that are no upload id (control characters, slashes, names longer than a file
name may be) name no upload: 404 for every method, and nothing is made on disk for them."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers import OCTETS, TUS, HaulServer

NOT_IDS = {
    "newline": "%0A",
    "carriage return": "%0D",
    "nul": "%00",
    "id then newline": "0123456789abcdef0123456789abcdef%0A",
    "slash": "/",
    "encoded slash": "%2F",
    "two segments": "0123456789abcdef/0123456789abcdef",
    "longer than a file name": "a" * 300,
    "very long": "b" * 10_000,
}


@pytest.mark.parametrize("method", ["HEAD", "PATCH", "DELETE", "GET"])
def test_a_path_that_is_no_upload_id_is_404(
    server: HaulServer, client: httpx.Client, method: str
) -> None:
    locks = server.data_dir / "locks"
    before = sorted(p.name for p in locks.iterdir()) if locks.exists() else []
    for name, upload_id in NOT_IDS.items():
        headers = {**TUS, "Upload-Offset": "0", "Content-Type": OCTETS}
        response = client.request(
            method, server.endpoint + upload_id, headers=headers, content=b"x" * 3
        )
        assert response.status_code == 404, (name, response.status_code, response.text)
        if method != "HEAD":
            assert response.text.startswith("ERR_UPLOAD_NOT_FOUND: "), (name, response.text)
    after = sorted(p.name for p in locks.iterdir()) if locks.exists() else []
    assert after == before  # no lock file named after a request's path


def test_the_collection_is_only_its_own_path(server: HaulServer, client: httpx.Client) -> None:
    """`$` in a route pattern also matches before a final newline: the collection is `/files/`,
    not `/files/<newline>`."""
    headers = {**TUS, "Upload-Length": "1"}
    on_a_resource = client.post(server.url + "/files/%0A", headers=headers)
    assert on_a_resource.status_code == 405  # a path below the collection names an upload
    assert on_a_resource.headers["allow"] == "OPTIONS, HEAD, PATCH, DELETE, GET"
    assert client.post(server.url + "/files%0A", headers=headers).status_code == 404
