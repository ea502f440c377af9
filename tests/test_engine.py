"""The engine under stress: interrupted and stalled bodies, racing writers, several processes
on one data dir, kill -9, and flat memory."""

from __future__ import annotations

import base64
import hashlib
import threading

import httpx

from tests.helpers import (
    OCTETS,
    TUS,
    create,
    head,
    patch,
    random_file,
    raw_patch,
    wait_for,
)

MiB = 1 << 20


def _offset(client: httpx.Client, url: str) -> int:
    return int(head(client, url).headers["upload-offset"])


def test_interrupted_patch_keeps_what_arrived(server, client: httpx.Client, tmp_path) -> None:
    data = random_file(tmp_path / "f", 10 * MiB).read_bytes()
    url = create(client, server, len(data))
    request = raw_patch(server, url, 0, len(data))
    request.send(data[: 3 * MiB + 123])
    wait_for(lambda: _offset(client, url) >= 2 * MiB)  # whole blocks land while it streams
    request.close()
    wait_for(lambda: _offset(client, url) == 3 * MiB + 123)  # the rest once it is gone
    wait_for(lambda: patch(client, url, 3 * MiB + 123, data[3 * MiB + 123 :]).status_code == 204)
    assert client.get(url).content == data


def test_stalled_body_times_out_and_releases_the_upload(make_server, client, tmp_path) -> None:
    server = make_server("--body-timeout", "1", "--lock-timeout", "0.2")
    url = create(client, server, 100)
    request = raw_patch(server, url, 0, 100)
    request.send(b"a" * 40)
    assert request.status(timeout=20) == 408  # the stalled request is answered and closed
    assert _offset(client, url) == 40
    assert patch(client, url, 40, b"b" * 60).status_code == 204
    request.close()
    assert client.get(url).content == b"a" * 40 + b"b" * 60


def test_interrupted_checksummed_patch_keeps_nothing(server, client: httpx.Client) -> None:
    url = create(client, server, 2 * MiB)
    digest = base64.b64encode(hashlib.sha1(b"x" * 2 * MiB).digest()).decode()
    request = raw_patch(server, url, 0, 2 * MiB, **{"Upload-Checksum": f"sha1 {digest}"})
    request.send(b"x" * (MiB + 5))
    wait_for(
        lambda: server.upload_path(url).exists() and server.upload_path(url).stat().st_size > 0
    )
    assert _offset(client, url) == 0  # unverified bytes never count
    request.close()
    wait_for(lambda: not server.upload_path(url).with_suffix(".pending").exists())
    assert _offset(client, url) == 0
    assert server.upload_path(url).stat().st_size == 0


def test_racing_writers_cannot_both_write(make_server, client: httpx.Client) -> None:
    server = make_server("--lock-timeout", "0.3")
    url = create(client, server, 2 * MiB)
    holder = raw_patch(server, url, 0, 2 * MiB)
    holder.send(b"A" * MiB)
    wait_for(lambda: _offset(client, url) == MiB)
    loser = patch(client, url, 0, b"B" * 2 * MiB)
    assert loser.status_code == 423
    assert loser.text.startswith("ERR_UPLOAD_LOCKED: ")
    late = patch(client, url, MiB, b"B" * MiB)
    assert late.status_code == 423
    holder.send(b"A" * MiB)
    assert holder.status() == 204
    holder.close()
    assert client.get(url).content == b"A" * 2 * MiB


def test_many_concurrent_racers_never_corrupt(server, client: httpx.Client) -> None:
    url = create(client, server, 64 * 1024)
    results: list[int] = []

    def race(tag: int) -> None:
        with httpx.Client(timeout=30, trust_env=False) as c:
            results.append(patch(c, url, 0, bytes([tag]) * 64 * 1024).status_code)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(204) == 1, results
    assert set(results) <= {204, 409, 423}
    body = client.get(url).content
    assert len(body) == 64 * 1024
    assert len(set(body)) == 1  # one writer's bytes, never a mix


def test_two_processes_share_one_data_dir(make_server, client, tmp_path) -> None:
    first = make_server("--lock-timeout", "0.3")
    second = make_server("--lock-timeout", "0.3", data_dir=first.data_dir)
    url = create(client, first, 2 * MiB)
    other_url = url.replace(str(first.port), str(second.port))
    holder = raw_patch(first, url, 0, 2 * MiB)
    holder.send(b"A" * MiB)
    wait_for(lambda: _offset(client, other_url) == MiB)
    assert patch(client, other_url, MiB, b"B" * MiB).status_code == 423
    holder.close()  # first process keeps the MiB that arrived and lets go
    wait_for(lambda: patch(client, other_url, MiB, b"B" * MiB).status_code == 204)
    assert client.get(url).content == b"A" * MiB + b"B" * MiB


def test_kill_9_mid_patch_resumes_from_durable_offset(make_server, client, tmp_path) -> None:
    data = random_file(tmp_path / "f", 8 * MiB, seed=3).read_bytes()
    server = make_server()
    url = create(client, server, len(data))
    request = raw_patch(server, url, 0, len(data))
    request.send(data[: 5 * MiB])
    wait_for(lambda: server.upload_path(url).stat().st_size >= 4 * MiB)
    server.kill()
    request.close()
    server.start()
    offset = _offset(client, url)
    assert 4 * MiB <= offset <= 5 * MiB
    assert server.upload_path(url).read_bytes() == data[:offset]
    assert patch(client, url, offset, data[offset:]).status_code == 204
    assert hashlib.sha256(client.get(url).content).digest() == hashlib.sha256(data).digest()


def test_kill_9_mid_checksummed_patch_forgets_unverified_bytes(make_server, client) -> None:
    server = make_server()
    url = create(client, server, 4 * MiB)
    assert patch(client, url, 0, b"v" * MiB).status_code == 204
    body = b"w" * 3 * MiB
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    request = raw_patch(server, url, MiB, len(body), **{"Upload-Checksum": f"sha256 {digest}"})
    request.send(body[: 2 * MiB])
    wait_for(lambda: server.upload_path(url).stat().st_size > MiB)
    server.kill()
    request.close()
    server.start()
    assert _offset(client, url) == MiB
    assert (
        patch(client, url, MiB, body, **{"Upload-Checksum": f"sha256 {digest}"}).status_code == 204
    )
    assert client.get(url).content == b"v" * MiB + body


def test_completed_uploads_survive_kill_9(make_server, client) -> None:
    server = make_server()
    urls = []
    for i in range(5):
        url = create(client, server, 1000)
        patch(client, url, 0, bytes([i]) * 1000)
        urls.append(url)
    server.kill()
    server.start()
    for i, url in enumerate(urls):
        assert client.get(url).content == bytes([i]) * 1000


def test_memory_stays_flat_during_a_large_upload(server, client) -> None:
    size = 768 * MiB
    url = create(client, server, size)
    baseline = server.rss()
    peak = baseline
    sent = 0
    block = b"\x5a" * MiB

    def body():
        nonlocal sent, peak
        while sent < size:
            sent += len(block)
            if sent % (32 * MiB) == 0:
                peak = max(peak, server.rss())
            yield block

    response = client.patch(
        url, content=body(),
        headers={**TUS, "Upload-Offset": "0", "Content-Type": OCTETS, "Content-Length": str(size)},
    )  # fmt: skip
    assert response.status_code == 204
    growth = peak - baseline
    # Bounded buffers: growth is a few MiB of blocks, far from the 768 MiB that passed through.
    assert growth < 48 * MiB, f"server RSS grew by {growth / MiB:.1f} MiB"
