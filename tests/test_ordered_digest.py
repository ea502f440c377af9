"""A parallel upload's SHA-256 computed while its partials arrive (``haul-part`` tags), so a
verified final upload does not read every byte back at the end; never at the cost of a wrong
or unverified digest."""

from __future__ import annotations

import base64
import hashlib
import os
import random
import re
from pathlib import Path

import httpx

import haul
from haul.wire.digest import format_repr_digest
from tests.helpers import TUS, HaulServer, create, patch, random_file, sha256_file

MiB = 1 << 20
AHEAD = re.compile(r"upload (\w+): (\d+) of (\d+) partials were hashed as they arrived")


def tagged_partial(
    client: httpx.Client, server: HaulServer, group: str, index: int, size: int
) -> str:
    tag = base64.b64encode(f"{group} {index}".encode()).decode()
    return create(
        client, server, size, **{"Upload-Concat": "partial", "Upload-Metadata": f"haul-part {tag}"}
    )


def final(client: httpx.Client, server: HaulServer, urls: list[str], sha256: str) -> httpx.Response:
    concat = "final;" + " ".join(httpx.URL(u).path for u in urls)
    headers = {**TUS, "Upload-Concat": concat, "Repr-Digest": format_repr_digest(sha256)}
    return client.post(server.endpoint, headers=headers)


def hashed_ahead(server: HaulServer) -> dict[str, tuple[int, int]]:
    assert server.log_path is not None
    found = AHEAD.findall(server.log_path.read_text())
    return {upload: (int(ahead), int(total)) for upload, ahead, total in found}


def test_partials_completing_out_of_order_are_hashed_ahead(
    server: HaulServer, client: httpx.Client
) -> None:
    chunks = [os.urandom(MiB + i) for i in range(8)]
    urls = [tagged_partial(client, server, "g1", i, len(c)) for i, c in enumerate(chunks)]
    order = list(range(8))
    random.Random(3).shuffle(order)
    for i in order:
        assert patch(client, urls[i], 0, chunks[i]).status_code == 204
    whole = b"".join(chunks)
    response = final(client, server, urls, hashlib.sha256(whole).hexdigest())
    assert response.status_code == 201, response.text
    location = response.headers["location"]
    assert client.get(location).content == whole
    assert client.head(location, headers=TUS).headers["repr-digest"] == format_repr_digest(
        hashlib.sha256(whole).hexdigest()
    )
    ahead, total = hashed_ahead(server)[location.rsplit("/", 1)[1]]
    assert total == 8
    assert ahead >= 6  # all but a last straggler or two were hashed already


def test_a_wrong_declared_digest_is_still_refused(server: HaulServer, client: httpx.Client) -> None:
    chunks = [os.urandom(MiB) for _ in range(3)]
    urls = [tagged_partial(client, server, "g2", i, MiB) for i in range(3)]
    for url, chunk in zip(urls, chunks, strict=True):
        assert patch(client, url, 0, chunk).status_code == 204
    response = final(client, server, urls, hashlib.sha256(b"something else").hexdigest())
    assert response.status_code == 422
    assert response.text.startswith("ERR_DIGEST_MISMATCH")


def test_another_order_than_the_tags_falls_back_to_reading_back(
    server: HaulServer, client: httpx.Client
) -> None:
    chunks = [os.urandom(MiB) for _ in range(3)]
    urls = [tagged_partial(client, server, "g3", i, MiB) for i in range(3)]
    for url, chunk in zip(urls, chunks, strict=True):
        assert patch(client, url, 0, chunk).status_code == 204
    swapped = [urls[1], urls[0], urls[2]]
    whole = chunks[1] + chunks[0] + chunks[2]
    response = final(client, server, swapped, hashlib.sha256(whole).hexdigest())
    assert response.status_code == 201, response.text
    assert client.get(response.headers["location"]).content == whole
    assert response.headers["location"].rsplit("/", 1)[1] not in hashed_ahead(server)


def test_a_final_over_part_of_a_group_hashes_the_rest_itself(
    server: HaulServer, client: httpx.Client
) -> None:
    """Tags promise nothing: a final upload may take only some of a group's partials."""
    chunks = [os.urandom(MiB) for _ in range(4)]
    urls = [tagged_partial(client, server, "g4", i, MiB) for i in range(4)]
    for url, chunk in zip(urls[:2], chunks[:2], strict=True):
        assert patch(client, url, 0, chunk).status_code == 204
    other = create(client, server, MiB, **{"Upload-Concat": "partial"})  # untagged
    extra = os.urandom(MiB)
    assert patch(client, other, 0, extra).status_code == 204
    whole = chunks[0] + chunks[1] + extra
    response = final(client, server, [urls[0], urls[1], other], hashlib.sha256(whole).hexdigest())
    assert response.status_code == 201, response.text
    assert client.get(response.headers["location"]).content == whole
    assert hashed_ahead(server)[response.headers["location"].rsplit("/", 1)[1]][1] == 3


def test_the_client_tags_its_partials(server: HaulServer, tmp_path: Path) -> None:
    source = random_file(tmp_path / "big.bin", 40 * MiB, seed=5)
    result = haul.Client(server.endpoint, state_dir=tmp_path / "state", chunk_size=4 * MiB,
                         parallel=4).upload(source)  # fmt: skip
    assert result.sha256 == sha256_file(source)
    ahead, total = hashed_ahead(server)[result.url.rsplit("/", 1)[1]]
    assert total == 10
    assert ahead >= 1
