"""IETF "Resumable Uploads for HTTP" against a real `haul serve`, over raw sockets so the 104
informational responses are seen on the wire, for each interop version, written from the
draft texts (draft-ietf-httpbis-resumable-upload-01 to -12, interop versions 3 to 9). What
only interop 9 (draft-12) does is in test_ietf_conformance_9.py."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import pytest

from tests.helpers import TUS, HaulServer, tls_files, wait_for

VERSIONS = (3, 4, 5, 6, 7, 8, 9)
PARTIAL = "application/partial-upload"
PROBLEMS = "https://iana.org/assignments/http-problem-types#"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    informational: list[tuple[int, dict[str, str]]] = field(default_factory=list)


class Wire:
    """One HTTP/1.1 connection written and read by hand."""

    def __init__(self, server: HaulServer) -> None:
        self.port = server.port
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        self.buffer = b""

    def send(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> None:
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    def _head(self) -> tuple[int, dict[str, str]]:
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            assert chunk, f"the connection closed mid-response: {self.buffer!r}"
            self.buffer += chunk
        block, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = block.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(status_line.split(" ", 2)[1]), headers

    def next_informational(self) -> tuple[int, dict[str, str]]:
        status, headers = self._head()
        assert 100 <= status < 200, status
        return status, headers

    def answer(self, method: str = "POST") -> Answer:
        informational = []
        status, headers = self._head()
        while 100 <= status < 200:
            informational.append((status, headers))
            status, headers = self._head()
        length = 0 if method == "HEAD" else int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            chunk = self.sock.recv(65536)
            assert chunk
            self.buffer += chunk
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return Answer(status, headers, body, informational)

    def close(self) -> None:
        self.sock.close()


def request(
    server: HaulServer, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> Answer:
    wire = Wire(server)
    try:
        wire.send(method, path, {"Content-Length": str(len(body)), **headers}, body)
        return wire.answer(method)
    finally:
        wire.close()


def create(server: HaulServer, version: int) -> Answer:
    """An empty, incomplete upload."""
    headers = {"Upload-Draft-Interop-Version": str(version), **complete_field(version, False)}
    return request(server, "POST", "/files/", headers)


def complete_field(version: int, complete: bool) -> dict[str, str]:
    if version == 3:  # draft-01: Upload-Incomplete, the opposite sense
        return {"Upload-Incomplete": "?0" if complete else "?1"}
    return {"Upload-Complete": "?1" if complete else "?0"}


def said_complete(version: int, headers: dict[str, str]) -> bool:
    if version == 3:
        return headers["upload-incomplete"] == "?0"
    return headers["upload-complete"] == "?1"


def append_headers(version: int, offset: int, complete: bool) -> dict[str, str]:
    headers = {"Upload-Draft-Interop-Version": str(version), "Upload-Offset": str(offset)}
    if version >= 6:  # draft-04 on: appends are application/partial-upload
        headers["Content-Type"] = PARTIAL
    return {**headers, **complete_field(version, complete)}


def path_of(location: str) -> str:
    return "/" + location.split("/", 3)[3] if location.startswith("http") else location


def download(server: HaulServer, location: str) -> httpx.Response:
    return httpx.get(server.url + path_of(location), timeout=30, trust_env=False)


@pytest.fixture
def limited(make_server: Callable[..., HaulServer]) -> HaulServer:
    return make_server(
        "--max-size", "64MiB", "--expiration", "1h", "--ietf-progress-interval", "64KiB"
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_a_whole_file_in_one_creation_announces_its_location_first(
    limited: HaulServer, version: int
) -> None:
    data = os.urandom(300_000)
    headers = {
        "Upload-Draft-Interop-Version": str(version),
        "Content-Type": "text/plain",
        "Content-Disposition": 'attachment; filename="notes.txt"',
        "Repr-Digest": "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode() + ":",
        **complete_field(version, True),
    }
    answer = request(limited, "POST", "/files/", headers, data)
    assert answer.status == 201, answer.body
    first_status, first = answer.informational[0]
    assert first_status == 104
    assert first["location"] == answer.headers["location"]
    assert first["upload-draft-interop-version"] == str(version)
    assert int(answer.headers["upload-offset"]) == len(data)
    assert said_complete(version, answer.headers)
    if version >= 6:
        age = "expires" if version == 6 else "max-age"
        assert first["upload-limit"] == f"max-size={64 << 20}, {age}=3600"
        if version >= 9:  # draft-12: max-age is the upload's own life; a complete one has none
            assert answer.headers["upload-limit"] == f"max-size={64 << 20}"
        else:
            assert answer.headers["upload-limit"] == first["upload-limit"]
    else:
        assert "upload-limit" not in first
    got = download(limited, answer.headers["location"])
    assert got.content == data
    assert got.headers["content-type"].startswith("text/plain")
    assert "notes.txt" in got.headers["content-disposition"]


@pytest.mark.parametrize("version", VERSIONS)
def test_an_upload_in_pieces_with_a_wrong_offset_between(server: HaulServer, version: int) -> None:
    data = os.urandom(200_000)
    created = create(server, version)
    assert created.status == 201
    assert int(created.headers["upload-offset"]) == 0
    assert not said_complete(version, created.headers)
    path = path_of(created.headers["location"])
    first = request(server, "PATCH", path, append_headers(version, 0, False), data[:80_000])
    assert first.status == 204
    assert int(first.headers["upload-offset"]) == 80_000
    assert not said_complete(version, first.headers)

    probe = {"Upload-Draft-Interop-Version": str(version)}
    state = request(server, "HEAD", path, probe)
    assert state.status in (200, 204)
    assert state.headers["cache-control"] == "no-store"
    assert int(state.headers["upload-offset"]) == 80_000
    assert not said_complete(version, state.headers)
    assert state.informational == []

    wrong = request(server, "PATCH", path, append_headers(version, 50_000, True), data[50_000:])
    assert wrong.status == 409
    assert wrong.headers["upload-offset"] == "80000"
    if version >= 6:  # draft-04 on: the problem type
        assert wrong.headers["content-type"] == "application/problem+json"
        assert json.loads(wrong.body) == {
            "type": PROBLEMS + "mismatching-upload-offset",
            "title": "offset from request does not match offset of resource",
            "expected-offset": 80_000,
            "provided-offset": 50_000,
        }

    rest = request(server, "PATCH", path, append_headers(version, 80_000, True), data[80_000:])
    assert rest.status == 204
    assert int(rest.headers["upload-offset"]) == len(data)
    assert said_complete(version, rest.headers)
    assert said_complete(version, request(server, "HEAD", path, probe).headers)
    assert download(server, created.headers["location"]).content == data
    if version >= 6:  # a completed upload takes no more
        again = request(server, "PATCH", path, append_headers(version, len(data), True), b"x")
        assert again.status == 400
        # draft-12 removed completed-upload: bytes past the end are an inconsistent length.
        kind = "completed-upload" if version < 9 else "inconsistent-upload-length"
        assert json.loads(again.body)["type"] == PROBLEMS + kind


@pytest.mark.parametrize("version", VERSIONS)
def test_an_interrupted_creation_keeps_what_arrived(server: HaulServer, version: int) -> None:
    data = os.urandom(10 << 20)
    sent = (3 << 20) + 123
    wire = Wire(server)
    wire.send("POST", "/files/", {
        "Upload-Draft-Interop-Version": str(version), "Content-Length": str(len(data)),
        **complete_field(version, True)}, data[:sent])  # fmt: skip
    status, first = wire.next_informational()
    assert status == 104
    location = first["location"]
    path = path_of(location)
    probe = {"Upload-Draft-Interop-Version": str(version)}

    def offset() -> int:  # -1 while the upload is busy (423)
        return int(request(server, "HEAD", path, probe).headers.get("upload-offset", "-1"))

    wait_for(lambda: offset() >= 2 << 20)  # whole blocks land while it streams
    wire.close()  # the connection dies mid-body
    wait_for(lambda: offset() == sent)  # the rest once it is gone
    # The length came from the first request's Content-Length; the rest completes it.
    rest = request(server, "PATCH", path, append_headers(version, sent, True), data[sent:])
    assert rest.status == 204, rest.body
    assert said_complete(version, rest.headers)
    assert download(server, location).content == data


@pytest.mark.parametrize("version", VERSIONS)
def test_an_interrupted_append_keeps_what_arrived(server: HaulServer, version: int) -> None:
    data = os.urandom(10 << 20)
    sent = (3 << 20) + 321
    created = create(server, version)
    path = path_of(created.headers["location"])
    wire = Wire(server)
    headers = {**append_headers(version, 0, True), "Content-Length": str(len(data))}
    wire.send("PATCH", path, headers, data[:sent])
    probe = {"Upload-Draft-Interop-Version": str(version)}

    def offset() -> int:  # -1 while the upload is busy (423)
        return int(request(server, "HEAD", path, probe).headers.get("upload-offset", "-1"))

    wait_for(lambda: offset() >= 2 << 20)  # whole blocks land while it streams
    wire.close()  # the connection dies mid-body
    wait_for(lambda: offset() == sent)  # the rest once it is gone
    state = request(server, "HEAD", path, probe)
    assert not said_complete(version, state.headers)
    rest = request(server, "PATCH", path, append_headers(version, sent, True), data[sent:])
    assert rest.status == 204, rest.body
    assert said_complete(version, rest.headers)
    assert download(server, created.headers["location"]).content == data


@pytest.mark.parametrize("version", VERSIONS)
def test_a_long_append_reports_its_progress_in_104s(limited: HaulServer, version: int) -> None:
    # Large enough that the storage holds more several times while it arrives, however busy
    # the machine (a 104 reports only what is stored).
    data = os.urandom(32 << 20)
    created = create(limited, version)
    path = path_of(created.headers["location"])
    answer = request(limited, "PATCH", path, append_headers(version, 0, True), data)
    assert answer.status == 204
    offsets = [int(h["upload-offset"]) for status, h in answer.informational if status == 104]
    assert len(offsets) >= 2
    assert offsets == sorted(set(offsets))
    assert offsets[0] > 0
    assert offsets[-1] < len(data)
    assert download(limited, created.headers["location"]).content == data


@pytest.mark.parametrize("version", VERSIONS)
def test_a_cancelled_upload_is_gone(server: HaulServer, version: int) -> None:
    created = request(server, "POST", "/files/", {
        "Upload-Draft-Interop-Version": str(version), **complete_field(version, False)},
        b"abc")  # fmt: skip
    path = path_of(created.headers["location"])
    assert int(created.headers["upload-offset"]) == 3
    probe = {"Upload-Draft-Interop-Version": str(version)}
    assert request(server, "DELETE", path, probe).status == 204
    assert request(server, "HEAD", path, probe).status in (404, 410)


@pytest.mark.parametrize("version", [6, 7, 8])
def test_limits_on_options_and_partial_upload_appends(limited: HaulServer, version: int) -> None:
    probe = {"Upload-Draft-Interop-Version": str(version)}
    options = request(limited, "OPTIONS", "/files/", probe)
    age = "expires" if version == 6 else "max-age"
    assert options.headers["upload-limit"] == f"max-size={64 << 20}, {age}=3600"
    assert options.headers["accept-patch"] == PARTIAL
    created = request(limited, "POST", "/files/", {**probe, **complete_field(version, False)})
    path = path_of(created.headers["location"])
    wrong_type = {**append_headers(version, 0, False), "Content-Type": "application/octet-stream"}
    assert request(limited, "PATCH", path, wrong_type, b"abc").status == 415


@pytest.mark.parametrize("version", [7, 8])
def test_conflicting_lengths_are_an_inconsistent_upload_length(
    server: HaulServer, version: int
) -> None:
    headers = {"Upload-Draft-Interop-Version": str(version), "Upload-Length": "20",
               **complete_field(version, True)}  # fmt: skip
    answer = request(server, "POST", "/files/", headers, b"0123456789")
    assert answer.status == 400
    assert answer.headers["content-type"] == "application/problem+json"
    assert json.loads(answer.body)["type"] == PROBLEMS + "inconsistent-upload-length"
    # And between requests: an upload of length 20 cannot be completed at 15.
    created = request(server, "POST", "/files/", {
        "Upload-Draft-Interop-Version": str(version), "Upload-Length": "20",
        **complete_field(version, False)}, b"0123456789")  # fmt: skip
    assert created.status == 201
    path = path_of(created.headers["location"])
    short = request(server, "PATCH", path, append_headers(version, 10, True), b"01234")
    assert short.status == 400
    assert json.loads(short.body)["type"] == PROBLEMS + "inconsistent-upload-length"


def test_digests_are_verified(server: HaulServer) -> None:
    data = b"the representation"
    wrong = base64.b64encode(hashlib.sha256(b"something else").digest()).decode()
    base = {"Upload-Draft-Interop-Version": "8", "Upload-Complete": "?1"}
    content = request(server, "POST", "/files/", {**base, "Content-Digest": f"sha-256=:{wrong}:"},
                      data)  # fmt: skip
    assert content.status == 460
    whole = request(server, "POST", "/files/", {**base, "Repr-Digest": f"sha-256=:{wrong}:"}, data)
    assert whole.status == 422
    right = base64.b64encode(hashlib.sha256(data).digest()).decode()
    good = request(server, "POST", "/files/", {**base, "Content-Digest": f"sha-256=:{right}:"},
                   data)  # fmt: skip
    assert good.status == 201
    assert download(server, good.headers["location"]).content == data


def test_tus_and_plain_requests_never_see_an_informational_response(limited: HaulServer) -> None:
    data = os.urandom(300_000)
    answer = request(limited, "POST", "/files/", {
        **TUS, "Upload-Length": str(len(data)),
        "Content-Type": "application/offset+octet-stream"}, data)  # fmt: skip
    assert answer.status == 201
    assert answer.informational == []
    assert "upload-limit" not in answer.headers


def test_unknown_interop_versions_are_refused(server: HaulServer) -> None:
    answer = request(server, "POST", "/files/", {"Upload-Draft-Interop-Version": "2",
                                                 "Upload-Complete": "?1"})  # fmt: skip
    assert answer.status == 400
    assert b"Upload-Draft-Interop-Version" in answer.body


def test_http2_carries_the_104_before_the_final_answer(make_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from h2.connection import H2Connection
    from h2.events import InformationalResponseReceived, ResponseReceived, StreamEnded

    chain, key, ca_file = tls_files(tmp_path)
    server = HaulServer(data_dir=tmp_path / "tls-data", ca_file=ca_file,
                        extra=["--tls-cert", str(chain), "--tls-key", str(key),
                               "--ietf-progress-interval", "64KiB"])  # fmt: skip
    server.start()
    try:
        tls = ssl.create_default_context(cafile=ca_file)
        tls.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        with tls.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            conn = H2Connection()
            conn.initiate_connection()
            data = os.urandom(8 << 20)
            conn.send_headers(1, [
                (":method", "POST"), (":path", "/files/"), (":scheme", "https"),
                (":authority", f"127.0.0.1:{server.port}"),
                ("upload-draft-interop-version", "8"), ("upload-complete", "?1"),
                ("content-length", str(len(data))),
            ])  # fmt: skip
            sock.sendall(conn.data_to_send())
            informational: list[dict[bytes, bytes]] = []
            final: dict[bytes, bytes] = {}
            sent, ended = 0, False
            while not ended:
                window = min(conn.local_flow_control_window(1), conn.max_outbound_frame_size)
                if sent < len(data) and window > 0:
                    piece = data[sent : sent + window]
                    sent += len(piece)
                    conn.send_data(1, piece, end_stream=sent == len(data))
                else:
                    for event in conn.receive_data(sock.recv(1 << 16)):
                        if isinstance(event, InformationalResponseReceived):
                            informational.append(dict(event.headers))
                        elif isinstance(event, ResponseReceived):
                            final = dict(event.headers)
                        elif isinstance(event, StreamEnded):
                            ended = True
                sock.sendall(conn.data_to_send())
        assert final[b":status"] == b"201"
        assert informational[0][b":status"] == b"104"
        assert informational[0][b"location"] == final[b"location"]
        offsets = [int(h[b"upload-offset"]) for h in informational[1:]]
        assert offsets
        assert offsets == sorted(set(offsets))
        assert offsets[-1] < len(data)
        location = final[b"location"].decode()
        got = httpx.get(location, verify=server.tls_context(), trust_env=False, timeout=30)
        assert got.content == data
    finally:
        server.stop()


def test_credentials_and_owners_apply(make_server: Callable[..., HaulServer]) -> None:
    server = make_server(
        "--api-keys", "alice:alice-key-0123456789abcdef,bob:bob-key-0123456789abcdef"
    )
    alice = {"Authorization": "Bearer alice-key-0123456789abcdef"}
    bob = {"Authorization": "Bearer bob-key-0123456789abcdef"}
    base = {"Upload-Draft-Interop-Version": "8", **complete_field(8, False)}
    anonymous = request(server, "POST", "/files/", base, b"abc")
    assert anonymous.status == 401
    assert anonymous.informational == []  # refused before any upload exists
    created = request(server, "POST", "/files/", {**base, **alice}, b"abc")
    assert created.status == 201
    path = path_of(created.headers["location"])
    probe = {"Upload-Draft-Interop-Version": "8"}
    assert request(server, "HEAD", path, {**probe, **bob}).status == 404
    assert request(server, "PATCH", path, {**append_headers(8, 3, True), **bob}, b"d").status == 404
    done = request(server, "PATCH", path, {**append_headers(8, 3, True), **alice}, b"d")
    assert done.status == 204
    assert said_complete(8, done.headers)


def test_without_the_lean_protocol_no_104_but_the_same_upload(
    make_server: Callable[..., HaulServer],
) -> None:
    server = make_server("--http1", "uvicorn")
    data = os.urandom(100_000)
    headers = {"Upload-Draft-Interop-Version": "6", **complete_field(6, True)}
    answer = request(server, "POST", "/files/", headers, data)
    assert answer.status == 201
    assert answer.informational == []
    assert download(server, answer.headers["location"]).content == data
