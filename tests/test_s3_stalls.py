"""`haul serve --storage s3` when the store hangs: the gateway (Ceph RGW) is frozen with SIGSTOP,
which keeps its sockets open and answers nothing, the way a stuck store behaves. A request
whose client left must not keep the upload locked while the store is frozen, and an upload
running through a freeze finishes by itself once the store thaws."""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import (
    HAUL,
    TUS,
    HaulServer,
    create,
    env_without_proxy,
    patch,
    random_file,
    raw_patch,
    tls_files,
    wait_for,
)
from tests.services import frozen_store, run_async, s3_client
from tests.test_s3_server import s3_options

MiB = 1 << 20


def _multipart_uploads(rgw: str, bucket: str) -> list[Any]:
    async def listing() -> list[Any]:
        async with s3_client(rgw) as s3:
            answer: Any = await s3.list_multipart_uploads(Bucket=bucket)
        return list(answer.get("Uploads", []))

    return run_async(listing())


@pytest.mark.parametrize("http1", ["lean", "uvicorn"])
@pytest.mark.parametrize(
    ("size", "seen"),
    [
        # Small enough to be read whole before the request is stuck on the store: the
        # client's close is seen, the request cancelled.
        pytest.param(
            100 * 1024 + 5, "the client went away; the request was cancelled", id="close-seen"
        ),
        # Reading paused behind the stuck store, the close waits behind unread bytes and
        # stays unseen: the client's next request takes over instead.
        pytest.param(3 * MiB + 5, "a newer request takes over", id="close-unseen"),
    ],
)
def test_client_gone_while_store_frozen_frees_the_lock(
    make_server: Callable[..., HaulServer],
    rgw: str,
    s3_bucket: str,
    http1: str,
    size: int,
    seen: str,
) -> None:
    server = make_server(*s3_options(rgw, s3_bucket), "--http1", http1, "--lock-timeout", "3")
    assert server.log_path is not None
    data = random_file(server.data_dir.parent / "body.bin", size, seed=7).read_bytes()
    with httpx.Client(trust_env=False, timeout=120) as client:
        url = create(client, server, len(data))
        with concurrent.futures.ThreadPoolExecutor(1) as pool, frozen_store(rgw):
            # The body is sent; saving it needs the store, which does not answer.
            first = raw_patch(server, url, 0, len(data))
            first.send(data)
            time.sleep(0.5)  # (time for the server to take the body in)
            first.close()
            if size < MiB:  # the server sees the close by itself, before any retry
                wait_for(lambda: seen in server.log_path.read_text(), timeout=30)  # type: ignore[union-attr]
            # The client's next attempt, while the store is still frozen: had the first
            # request kept the lock until the store answered, this one would get 423 after
            # --lock-timeout, well within the freeze.
            second = pool.submit(patch, client, url, 0, data)
            time.sleep(6)
            assert not second.done() or second.result().status_code != 423
            log = server.log_path.read_text()
        assert seen in log  # the first request ended while the store was frozen
        answer = second.result()
        assert answer.status_code == 204, answer.text
        assert answer.headers["upload-offset"] == str(len(data))
        assert client.get(url).content == data


@pytest.mark.parametrize(
    ("server_options", "client_options"),
    [
        pytest.param([], [], id="default-timeouts"),
        # Everything times out during the freeze: the store's calls on the server, the
        # client's requests; the client's retries carry the upload across.
        pytest.param(
            ["--s3-timeout", "3s", "--s3-retries", "1"], ["--timeout", "5"], id="short-timeouts"
        ),
    ],
)
def test_upload_survives_a_frozen_store(
    make_server: Callable[..., HaulServer],
    rgw: str,
    s3_bucket: str,
    tmp_path: Path,
    server_options: list[str],
    client_options: list[str],
) -> None:
    server = make_server(*s3_options(rgw, s3_bucket), *server_options)
    source = random_file(tmp_path / "big.bin", 96 * MiB + 3, seed=15)
    command = [HAUL, "upload", str(source), "--server", server.url, "--json", "--no-resume",
               "--chunk-size", "8MiB", *client_options]  # fmt: skip
    upload = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=env_without_proxy())  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not _multipart_uploads(rgw, s3_bucket):  # the upload is under way
            assert upload.poll() is None, upload.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.3)
        with frozen_store(rgw):
            assert upload.poll() is None, "the upload ended before the store froze"
            time.sleep(15)
            assert upload.poll() is None  # nothing completes against a frozen store
        out, err = upload.communicate(timeout=300)
    finally:
        if upload.poll() is None:
            upload.kill()
    assert upload.returncode == 0, err.decode()
    result = json.loads(out.decode().strip().splitlines()[-1])
    digest = hashlib.sha256()
    with (
        httpx.Client(trust_env=False, timeout=120) as client,
        client.stream("GET", result["url"]) as body,
    ):
        for block in body.iter_bytes():
            digest.update(block)
    assert digest.hexdigest() == hashlib.sha256(source.read_bytes()).hexdigest()


def test_http2_stream_given_up_while_store_frozen_is_cancelled(
    make_server: Callable[..., HaulServer], rgw: str, s3_bucket: str, tmp_path: Path
) -> None:
    chain, key, ca_file = tls_files(tmp_path)
    server = HaulServer(data_dir=tmp_path / "tls-data", ca_file=ca_file,
                        extra=[*s3_options(rgw, s3_bucket), "--tls-cert", str(chain),
                               "--tls-key", str(key)]).start()  # fmt: skip
    assert server.log_path is not None
    data = random_file(tmp_path / "body.bin", 10 * 1024 + 5, seed=9).read_bytes()
    try:
        with httpx.Client(http2=True, verify=server.tls_context(), timeout=60) as h2:
            url = create(h2, server, len(data))
            with (
                frozen_store(rgw),
                httpx.Client(http2=True, verify=server.tls_context(), timeout=2) as impatient,
            ):
                # The client gives up on its PATCH (its timeout) and closes the connection.
                with pytest.raises(httpx.TimeoutException):
                    patch(impatient, url, 0, data)
                impatient.close()
                wait_for(
                    lambda: "the request was cancelled" in server.log_path.read_text(),  # type: ignore[union-attr]
                    timeout=30,
                )
            answer = patch(h2, url, 0, data)
            assert answer.status_code == 204, answer.text
            assert h2.get(url).content == data
    finally:
        server.stop()


def test_a_part_sent_into_a_frozen_store_times_out_as_503(
    make_server: Callable[..., HaulServer], rgw: str, s3_bucket: str
) -> None:
    # Without a limit on silence while sending, a part's upload into a frozen store would
    # wait for as long as the freeze lasts; with one, the request fails during the freeze,
    # as the store being unavailable.
    server = make_server(*s3_options(rgw, s3_bucket), "--s3-timeout", "5s", "--s3-retries", "1")
    data = random_file(server.data_dir.parent / "body.bin", 24 * MiB, seed=3).read_bytes()
    with httpx.Client(trust_env=False, timeout=120) as client:
        url = create(client, server, len(data))
        request = raw_patch(server, url, 0, len(data))
        request.send(data[:MiB])  # the offset is read and the writer opened: the store answers
        time.sleep(0.5)
        with concurrent.futures.ThreadPoolExecutor(1) as pool, frozen_store(rgw):
            rest = pool.submit(request.send, data[MiB:])  # parts go out into the frozen store
            status = request.status(timeout=60)
            request.close()
            with contextlib.suppress(OSError):
                rest.result()
        assert status == 503
        assert int(client.head(url, headers=TUS).headers["upload-offset"]) < len(data)
