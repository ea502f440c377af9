"""Transport and abuse: TLS with HTTP/2, slowloris, slow bodies, per-client caps, rate limits."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.helpers import OCTETS, TUS, HaulServer, random_file, sha256_file, tls_files, wait_for

ATTACKER = "127.0.0.2"  # another loopback address: a different client than the tests' own


@pytest.fixture
def tls_server(make_server: Callable[..., HaulServer], tmp_path: Path) -> HaulServer:
    chain, key, ca_file = tls_files(tmp_path)
    server = HaulServer(data_dir=tmp_path / "tls-data", ca_file=ca_file,
                        extra=["--tls-cert", str(chain), "--tls-key", str(key)])  # fmt: skip
    server.start()
    yield server  # type: ignore[misc]
    server.stop()


def test_tls_serves_http2_and_http11_on_one_port_with_hsts(tls_server: HaulServer) -> None:
    data = random_file_bytes(3 << 20)
    with httpx.Client(http2=True, verify=tls_server.tls_context()) as h2:
        created = h2.post(tls_server.endpoint, headers={**TUS, "Upload-Length": str(len(data))})
        assert created.http_version == "HTTP/2"
        assert created.status_code == 201
        url = created.headers["location"]
        assert url.startswith("https://")
        patched = h2.patch(
            url, content=data, headers={**TUS, "Upload-Offset": "0", "Content-Type": OCTETS}
        )
        assert (patched.status_code, patched.http_version) == (204, "HTTP/2")
        assert patched.headers["strict-transport-security"].startswith("max-age=")
        downloaded = h2.get(url)
    assert hashlib.sha256(downloaded.content).digest() == hashlib.sha256(data).digest()
    with httpx.Client(http2=False, verify=tls_server.tls_context()) as h1:
        plain = h1.head(url, headers=TUS)
    assert (plain.http_version, plain.headers["upload-offset"]) == ("HTTP/1.1", str(len(data)))
    with pytest.raises(httpx.HTTPError):  # plain HTTP is not spoken on the TLS port
        httpx.get(tls_server.url.replace("https", "http") + "/healthz", timeout=3)


def test_http2_uploads_share_one_connection_under_flow_control(tls_server: HaulServer) -> None:
    # Bodies larger than a stream's window (8 MiB), four at once beyond the connection's
    # (16 MiB): they go through only if the windows are given back as the bytes are stored.
    datas = [random_file_bytes((20 << 20) + i) for i in range(4)]
    patch_headers = {**TUS, "Upload-Offset": "0", "Content-Type": OCTETS}

    async def run() -> None:
        verify = tls_server.tls_context()
        async with httpx.AsyncClient(http2=True, verify=verify, timeout=60) as h2:
            urls = []
            for data in datas:
                created = await h2.post(
                    tls_server.endpoint, headers={**TUS, "Upload-Length": str(len(data))}
                )
                urls.append(created.headers["location"])
            for _ in range(2):  # answered before their bodies are read: 409, and the window
                wrong = await h2.patch(  # those bodies took must come back to the connection
                    urls[0], content=datas[0], headers={**patch_headers, "Upload-Offset": "5"}
                )
                assert (wrong.status_code, wrong.http_version) == (409, "HTTP/2")
            answers = await asyncio.gather(
                *(h2.patch(url, content=data, headers=patch_headers)
                  for url, data in zip(urls, datas, strict=True))
            )  # fmt: skip
            assert [(a.status_code, a.http_version) for a in answers] == [(204, "HTTP/2")] * 4
            for url, data in zip(urls, datas, strict=True):
                assert (await h2.get(url)).content == data

    asyncio.run(run())


def test_an_http2_stream_reset_mid_body_keeps_what_arrived(tls_server: HaulServer) -> None:
    from h2.connection import H2Connection

    data = random_file_bytes(12 << 20)
    with httpx.Client(verify=tls_server.tls_context()) as h1:
        created = h1.post(tls_server.endpoint, headers={**TUS, "Upload-Length": str(len(data))})
        url = created.headers["location"]
        tls = ssl.create_default_context(cafile=tls_server.ca_file)
        tls.set_alpn_protocols(["h2"])
        port = tls_server.port
        with tls.wrap_socket(socket.create_connection(("127.0.0.1", port)),
                             server_hostname="127.0.0.1") as sock:  # fmt: skip
            # A client of h2's own that sends 4 MiB of the body, then resets the stream.
            conn = H2Connection()
            conn.initiate_connection()
            conn.send_headers(1, [
                (":method", "PATCH"), (":path", urlsplit(url).path), (":scheme", "https"),
                (":authority", f"127.0.0.1:{port}"), ("tus-resumable", "1.0.0"),
                ("upload-offset", "0"), ("content-type", OCTETS),
                ("content-length", str(len(data))),
            ])  # fmt: skip
            sent = 0
            while sent < 4 << 20:
                window = min(conn.local_flow_control_window(1), conn.max_outbound_frame_size)
                if window <= 0:
                    sock.sendall(conn.data_to_send())
                    conn.receive_data(sock.recv(1 << 16))  # the server opens its windows
                    continue
                piece = data[sent : min(sent + window, 4 << 20)]
                conn.send_data(1, piece)
                sent += len(piece)
            sock.sendall(conn.data_to_send())
            # (bytes are stored in blocks: the last part of a block waits for the rest)
            wait_for(lambda: int(h1.head(url, headers=TUS).headers["upload-offset"]) > 0, 10)
            conn.reset_stream(1)
            sock.sendall(conn.data_to_send())
            # The request is let go at once, keeping what arrived; the next one goes on.
            started = time.monotonic()
            kept = int(h1.head(url, headers=TUS).headers["upload-offset"])
            patched = h1.patch(url, content=data[kept:], headers={
                **TUS, "Upload-Offset": str(kept), "Content-Type": OCTETS})  # fmt: skip
            while patched.status_code in (409, 423) and time.monotonic() - started < 10:
                kept = int(h1.head(url, headers=TUS).headers["upload-offset"])
                patched = h1.patch(url, content=data[kept:], headers={
                    **TUS, "Upload-Offset": str(kept), "Content-Type": OCTETS})  # fmt: skip
        assert patched.status_code == 204, patched.text
        assert 0 < kept <= sent  # what arrived before the reset was kept
        assert h1.get(url).content == data


def random_file_bytes(size: int) -> bytes:
    import random

    return random.Random(size).randbytes(size)


class Slowloris:
    """Many connections from another address that send a request's headers a byte at a time.

    The request line goes at once; the rest of the header trickles in at two bytes a second
    and would be complete after about 9 s, three times the servers' 3 s header deadline. A
    connection the server answers (``answered``) is one whose deadline never fired."""

    PREFIX = b"PATCH /files/0123456789abcdef0123456789abcdef HTTP/1.1\r\nHost: x\r\n"
    TRICKLE = b"X-Pad: " + b"a" * 8 + b"\r\n\r\n"

    def __init__(self, port: int, count: int, tls: ssl.SSLContext | None = None) -> None:
        self.port = port
        self.count = count
        self.tls = tls
        self.sockets: list[socket.socket] = []
        self.closed_at: dict[int, float] = {}
        self.answered: set[int] = set()
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)

    def __enter__(self) -> Slowloris:
        for _ in range(self.count):
            sock = socket.socket()
            sock.bind((ATTACKER, 0))
            sock.connect(("127.0.0.1", self.port))
            if self.tls is not None:  # the handshake, then the same trickle, encrypted
                sock.settimeout(10)
                try:
                    sock = self.tls.wrap_socket(sock, server_hostname="127.0.0.1")
                except OSError:  # refused (closed) before the handshake
                    self.closed_at[len(self.sockets)] = time.monotonic() - self.started
                    self.sockets.append(sock)
                    continue
            try:
                sock.sendall(self.PREFIX)
            except OSError:  # closed at once (beyond the per-client cap)
                self.closed_at[len(self.sockets)] = time.monotonic() - self.started
            sock.setblocking(False)
            self.sockets.append(sock)
        self._thread.start()
        return self

    def _trickle(self) -> None:
        sent = 0
        while not self._stop.wait(0.5):
            for index, sock in enumerate(self.sockets):
                if index in self.closed_at or index in self.answered:
                    continue
                try:
                    if sock.recv(1) == b"":
                        self.closed_at[index] = time.monotonic() - self.started
                    else:  # the header was complete: an answer, not a close
                        self.answered.add(index)
                    continue
                except (BlockingIOError, ssl.SSLWantReadError):
                    pass
                except OSError:
                    self.closed_at[index] = time.monotonic() - self.started
                    continue
                try:
                    if piece := self.TRICKLE[sent : sent + 1]:
                        sock.send(piece)
                except OSError:
                    self.closed_at[index] = time.monotonic() - self.started
            sent += 1

    def settled(self) -> bool:
        """Every connection was closed or answered."""
        return len(self.closed_at) + len(self.answered) == self.count

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in self.sockets:
            sock.close()


def test_slowloris_does_not_stop_a_real_upload(
    make_server: Callable[..., HaulServer], tmp_path: Path
) -> None:
    server = make_server("--header-timeout", "3s")
    source = random_file(tmp_path / "real.bin", 40 << 20, seed=21)
    with Slowloris(server.port, 200) as attack:
        time.sleep(0.5)
        # Beyond the cap of 64 connections per client, the rest were closed at once.
        wait_for(lambda: len(attack.closed_at) >= 200 - 64, timeout=10)
        result = _haul_upload(server, source)
        assert result.returncode == 0, result.stderr
        # Trickling headers do not keep a connection: all are closed once the deadline passes.
        wait_for(attack.settled, timeout=30)
    url = json.loads(result.stdout.strip().splitlines()[-1])["url"]
    with httpx.Client(trust_env=False) as client:
        body = client.get(url).content
    assert hashlib.sha256(body).hexdigest() == sha256_file(source)
    assert not attack.answered  # every one was closed before its header was complete
    assert len(attack.closed_at) == 200


def test_slowloris_over_tls_does_not_stop_a_real_upload(tmp_path: Path) -> None:
    # The same limits as plain HTTP: the per-client cap (before the handshake) and the header
    # deadline (after it).
    chain, key, ca_file = tls_files(tmp_path)
    server = HaulServer(data_dir=tmp_path / "tls-data", ca_file=ca_file,
                        extra=["--tls-cert", str(chain), "--tls-key", str(key),
                               "--header-timeout", "3s"]).start()  # fmt: skip
    try:
        source = random_file(tmp_path / "real.bin", 40 << 20, seed=22)
        tls = ssl.create_default_context(cafile=ca_file)
        with Slowloris(server.port, 200, tls=tls) as attack:
            time.sleep(0.5)
            assert len(attack.closed_at) >= 200 - 64  # beyond the cap of 64: closed at once
            result = _haul_upload(server, source, "--ca-file", str(ca_file))
            assert result.returncode == 0, result.stderr
            wait_for(attack.settled, timeout=30)
        url = json.loads(result.stdout.strip().splitlines()[-1])["url"]
        with httpx.Client(trust_env=False, verify=tls) as client:
            body = client.get(url).content
    finally:
        server.stop()
    assert hashlib.sha256(body).hexdigest() == sha256_file(source)
    assert not attack.answered  # every one was closed before its header was complete
    assert len(attack.closed_at) == 200


def _haul_upload(server: HaulServer, source: Path, *options: str):  # type: ignore[no-untyped-def]
    import subprocess

    from tests.helpers import HAUL, env_without_proxy

    return subprocess.run(
        [HAUL, "upload", str(source), "--server", server.endpoint, "--no-resume", "--json",
         *options],
        capture_output=True, text=True, timeout=120, env=env_without_proxy(),
    )  # fmt: skip


def test_a_body_slower_than_the_minimum_speed_is_closed_and_kept(
    make_server: Callable[..., HaulServer], client: httpx.Client
) -> None:
    server = make_server("--body-timeout", "2s", "--min-speed", "2KB")
    created = client.post(server.endpoint, headers={**TUS, "Upload-Length": "100000"})
    url = created.headers["location"]
    path = url.split("127.0.0.1:")[1].split("/", 1)[1]
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            f"PATCH /{path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"
            f"Content-Type: {OCTETS}\r\nContent-Length: 100000\r\n\r\n".encode()
        )
        started = time.monotonic()
        answer = b""
        sent = 0
        sock.settimeout(0.3)
        while time.monotonic() - started < 15 and not answer:
            sock.sendall(b"x" * 300)  # 1 KB/s: never stalls, but too slow
            sent += 300
            with contextlib.suppress(TimeoutError):
                answer = sock.recv(400)
        sock.settimeout(2)
        with contextlib.suppress(OSError):
            while more := sock.recv(400):  # the rest of the answer, until the server closes
                answer += more
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"slower than 2000 bytes a second" in answer
    # Cut off soon after the 2 s the rule waits for: long before a twentieth of the body (at
    # 1 KB/s about 5 s of it) could arrive, let alone the whole of it.
    assert sent < 100000 // 20, sent
    offset = int(client.head(url, headers=TUS).headers["upload-offset"])
    assert 0 < offset < 100000  # what arrived is kept


def test_requests_in_flight_per_client_are_capped(
    make_server: Callable[..., HaulServer],
) -> None:
    server = make_server("--max-requests-per-client", "2")
    with httpx.Client(trust_env=False) as client:
        url = client.post(server.endpoint, headers={**TUS, "Upload-Length": "10"}).headers[
            "location"
        ]
    path = url.split(str(server.port), 1)[1]
    hanging = []
    for _ in range(2):  # two PATCHes whose bodies never come
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(
            f"PATCH {path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"
            f"Content-Type: {OCTETS}\r\nContent-Length: 10\r\n\r\n".encode()
        )
        hanging.append(sock)
    try:
        with httpx.Client(trust_env=False) as client:
            # Once the server holds both hanging requests (at once here, later on a busy machine),
            # a third request from the same address is refused.
            wait_for(lambda: client.get(url, headers=TUS).status_code == 429, timeout=10)
            third = client.get(url, headers=TUS)
        assert third.status_code == 429
        assert third.text.startswith("ERR_RATE_LIMITED: too many requests at once")
        assert third.headers["retry-after"] == "1"
        other = httpx.Client(transport=httpx.HTTPTransport(local_address=ATTACKER), trust_env=False)
        with other:
            assert other.head(url, headers=TUS).status_code == 200  # another client is served
    finally:
        for sock in hanging:
            sock.close()


def test_rate_limits_per_ip_and_per_owner(make_server: Callable[..., HaulServer]) -> None:
    key = "rate-user-0123456789abcdef"
    server = make_server(
        "--rate-limit", "2", "--rate-burst", "5", "--api-keys", f"rita:{key}", "--allow-anonymous"
    )

    def burst(client: httpx.Client, headers: dict[str, str]) -> list[int]:
        return [client.options(server.endpoint, headers=headers).status_code for _ in range(7)]

    with httpx.Client(trust_env=False) as here:
        codes = burst(here, TUS)
        assert codes[:5] == [204] * 5
        assert 429 in codes[5:]
        limited = here.options(server.endpoint, headers=TUS)
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 2
    elsewhere = httpx.Client(transport=httpx.HTTPTransport(local_address=ATTACKER), trust_env=False)
    with elsewhere:
        assert elsewhere.options(server.endpoint).status_code == 204  # its own bucket
        # The owner's bucket follows the owner across addresses.
        auth = {**TUS, "Authorization": f"Bearer {key}", "Upload-Length": "1"}
        codes = [elsewhere.post(server.endpoint, headers=auth).status_code for _ in range(4)]
    assert codes.count(201) >= 1
    time.sleep(1.2)
    with httpx.Client(trust_env=False) as here:
        assert here.options(server.endpoint).status_code == 204  # refilled
