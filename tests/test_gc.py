"""Garbage collection: expiry, tombstones, orphans; in the server and with `haul gc`."""

from __future__ import annotations

import json
import os
import subprocess
import time

import httpx

from tests.helpers import HAUL, TUS, create, head, patch


def _gc(data_dir, *args: str) -> dict[str, int]:
    out = subprocess.run([HAUL, "gc", "--data-dir", str(data_dir), *args],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return json.loads(out)  # type: ignore[no-any-return]


def test_haul_gc_expires_purges_and_removes_orphans(make_server, client: httpx.Client) -> None:
    server = make_server("--expiration", "1s", "--sweep-interval", "0")
    stale = create(client, server, 10)
    patch(client, stale, 0, b"abc")
    done = create(client, server, 3)
    patch(client, done, 0, b"xyz")
    uploads = server.data_dir / "uploads"
    orphan = uploads / ("f" * 32)
    orphan.write_bytes(b"left behind by a crash")
    old = time.time() - 7200
    os.utime(orphan, (old, old))
    time.sleep(1.2)

    report = _gc(server.data_dir)
    assert report == {"expired": 1, "purged_tombstones": 0, "orphans": 1}
    assert head(client, stale).status_code == 410
    assert not (uploads / stale.rsplit("/", 1)[1]).exists()
    assert not orphan.exists()
    assert client.get(done).content == b"xyz"  # complete uploads never expire

    report = _gc(server.data_dir, "--tombstone-ttl", "0")
    assert report["purged_tombstones"] == 1
    assert head(client, stale).status_code == 404


def test_young_files_without_a_record_are_left_alone(make_server, client) -> None:
    server = make_server("--sweep-interval", "0")
    young = server.data_dir / "uploads" / ("e" * 32)
    young.write_bytes(b"maybe being created right now")
    assert _gc(server.data_dir)["orphans"] == 0
    assert young.exists()


def test_expired_concatenation_final_and_terminated_uploads(make_server, client) -> None:
    server = make_server("--expiration", "1s", "--sweep-interval", "0.2")
    partial = create(client, server, 5, **{"Upload-Concat": "partial"})
    final = client.post(server.endpoint, headers={**TUS, "Upload-Concat": f"final;{partial}"})
    assert final.status_code == 201
    # A second final waits on a partial its client terminates instead.
    dropped = create(client, server, 5, **{"Upload-Concat": "partial"})
    orphaned = client.post(server.endpoint, headers={**TUS, "Upload-Concat": f"final;{dropped}"})
    assert orphaned.status_code == 201
    assert client.delete(dropped, headers=TUS).status_code == 204
    assert head(client, dropped).status_code == 410
    assert head(client, orphaned.headers["location"]).status_code == 410
    gone = client.get(orphaned.headers["location"])
    assert gone.status_code == 410
    assert gone.text.startswith(f"ERR_UPLOAD_GONE: partial upload {dropped.rsplit('/', 1)[1]} ")
    deadline = time.monotonic() + 15
    while head(client, partial).status_code != 410 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert head(client, partial).status_code == 410
    assert head(client, final.headers["location"]).status_code == 410


def test_complete_partials_no_final_takes_expire(make_server, client: httpx.Client) -> None:
    server = make_server("--expiration", "1s", "--sweep-interval", "0")
    abandoned = create(client, server, 3, **{"Upload-Concat": "partial"})
    patch(client, abandoned, 0, b"abc")
    assert "upload-expires" in head(client, abandoned).headers  # complete, still expiring
    whole = create(client, server, 3)
    patch(client, whole, 0, b"xyz")
    assert "upload-expires" not in head(client, whole).headers
    time.sleep(1.2)

    assert _gc(server.data_dir)["expired"] == 1
    assert head(client, abandoned).status_code == 410
    assert client.get(whole).content == b"xyz"
    late = client.post(server.endpoint, headers={**TUS, "Upload-Concat": f"final;{abandoned}"})
    assert late.status_code == 400
    assert "expired" in late.text


def test_kept_partials_stop_expiring_once_concatenated(make_server, client) -> None:
    server = make_server("--expiration", "1s", "--sweep-interval", "0", "--keep-partials")
    part = create(client, server, 3, **{"Upload-Concat": "partial"})
    patch(client, part, 0, b"abc")
    final = client.post(server.endpoint, headers={**TUS, "Upload-Concat": f"final;{part}"})
    assert final.status_code == 201
    assert "upload-expires" not in head(client, part).headers
    time.sleep(1.2)
    assert _gc(server.data_dir)["expired"] == 0
    assert client.get(part).content == b"abc"
    assert client.get(final.headers["location"]).content == b"abc"
