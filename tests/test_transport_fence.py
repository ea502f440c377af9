"""The transport's fences: the lean HTTP/1.1 protocol only on the uvicorn internals it was
tested with (else uvicorn's own, still guarded), and HTTP/2 streams capped per connection with
rapid-reset floods sent away (CVE-2023-44487)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import re
import socket
import ssl
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    Event,
    PingAckReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
)
from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.flow_control import FlowControl

import tests.helpers
from haul.transport import http1
from haul.transport.guard import guarded_protocol
from tests.helpers import OCTETS, TUS, HaulServer, tls_files, wait_for

ATTACKER = "127.0.0.2"  # other loopback addresses: clients other than the tests' own
OBSERVER = "127.0.0.3"
UNTESTED_WARNING = "is not a release the lean HTTP/1.1 protocol was tested with"

# -- the uvicorn internals the lean protocol relies on ---------------------------------------

# The uvicorn methods haul.transport.http1 replaces rather than extends, by the SHA-256 of
# their source: a release that changes one must be read against http1.py before it is added
# to TESTED_UVICORN (then its digests join these).
REPLACED_SOURCES = {
    "HttpToolsProtocol.on_body": {
        "415b4cef19fba083055fe4466dd259ce6abac6d194caf566ad9e7be0c639ca21",
    },
    "RequestResponseCycle.receive": {
        "817bd782de41bd0a08d52d395b5e80c37297b59dc4f542cd122b51caf6d4a947",
    },
}


def _parameters(function: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_uvicorn_internals_the_lean_protocol_extends_are_there() -> None:
    protocol, cycle = httptools_impl.HttpToolsProtocol, httptools_impl.RequestResponseCycle
    assert isinstance(uvicorn.__version__, str)  # what the release check reads
    # Called by uvicorn (and by the TLS gate) with these arguments; extended by super().
    assert _parameters(protocol.__init__) == ["self", "config", "server_state", "app_state",
                                              "_loop"]  # fmt: skip
    assert _parameters(protocol.connection_made) == ["self", "transport"]
    assert _parameters(protocol.connection_lost) == ["self", "exc"]
    assert _parameters(protocol.data_received) == ["self", "data"]
    assert _parameters(protocol.on_message_begin) == ["self"]
    assert _parameters(protocol.on_headers_complete) == ["self"]
    assert _parameters(protocol.on_body) == ["self", "body"]
    assert inspect.iscoroutinefunction(cycle.receive)
    assert _parameters(cycle.receive) == ["self"]
    assert inspect.iscoroutinefunction(cycle.run_asgi)
    # The protocol's state the lean and guarded protocols read.
    config = uvicorn.Config(_echo_app, log_level="warning")
    state = uvicorn.server.ServerState()
    made = protocol(config, state, {}, asyncio.new_event_loop())
    try:
        assert {"cycle", "flow", "loop", "transport", "client", "parser"} <= set(vars(made))
    finally:
        made.loop.close()
    # The request's state _PieceCycle.receive reads and writes in place of uvicorn's.
    arguments: dict[str, Any] = {
        "scope": {"type": "http"}, "transport": None, "flow": None, "logger": None,
        "access_logger": None, "access_log": False, "default_headers": [],
        "message_event": asyncio.Event(), "expect_100_continue": False, "keep_alive": True,
        "on_response": lambda: None,
    }  # fmt: skip
    request = cycle(**arguments)
    assert {"waiting_for_100_continue", "transport", "disconnected", "response_complete",
            "flow", "message_event", "more_body", "body"} <= set(vars(request))  # fmt: skip
    # What the informational responses (104 Upload Resumption Supported) read of a request.
    assert {"scope", "response_started", "transport"} <= set(vars(request))
    assert request.scope is arguments["scope"]
    assert request.response_started is False
    assert vars(httptools_impl)["FlowControl"] is FlowControl  # what the protocol's flow is
    assert _parameters(FlowControl.pause_reading) == ["self"]
    assert _parameters(FlowControl.resume_reading) == ["self"]


def test_uvicorn_state_the_tls_gate_and_http2_read_is_there() -> None:
    # haul's protocols are handed to uvicorn as a class, built with uvicorn's own arguments
    # (pinned above), and read the server's configuration and state as uvicorn's do.
    config = uvicorn.Config(_echo_app, http=httptools_impl.HttpToolsProtocol, log_level="warning")
    config.load()
    assert config.http_protocol_class is httptools_impl.HttpToolsProtocol
    assert config.loaded_app is not None
    assert isinstance(config.asgi_version, str)
    assert isinstance(config.root_path, str)
    assert isinstance(config.timeout_keep_alive, int | float)
    state = uvicorn.server.ServerState()
    assert isinstance(state.connections, set)
    assert isinstance(state.tasks, set)


def test_uvicorn_methods_the_lean_protocol_replaces_are_unchanged() -> None:
    methods: dict[str, Callable[..., Any]] = {
        "HttpToolsProtocol.on_body": httptools_impl.HttpToolsProtocol.on_body,
        "RequestResponseCycle.receive": httptools_impl.RequestResponseCycle.receive,
    }
    for name, method in methods.items():
        source = textwrap.dedent(inspect.getsource(method)).encode()
        digest = hashlib.sha256(source).hexdigest()
        assert digest in REPLACED_SOURCES[name], (
            f"uvicorn {uvicorn.__version__} changed {name} (sha256 {digest}): read it against "
            "haul.transport.http1 before adding the release to TESTED_UVICORN"
        )


def test_constraints_pin_a_tested_uvicorn() -> None:
    constraints = (Path(__file__).parent.parent / "constraints.txt").read_text()
    pinned = re.search(r"^uvicorn==(\S+)$", constraints, re.MULTILINE)
    assert pinned is not None
    assert pinned[1] in http1.TESTED_UVICORN
    # The suite runs on one of them too: on another, haul would serve with uvicorn's own
    # protocol, and that must be decided, not found out from a log.
    assert uvicorn.__version__ in http1.TESTED_UVICORN, (
        f"uvicorn {uvicorn.__version__} is not in TESTED_UVICORN: check the contract tests "
        "above, then add it"
    )


async def _echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with the SHA-256 of the body and the class of the request it was handed."""
    if scope["type"] != "http":
        return
    digest, more = hashlib.sha256(), True
    while more:
        message = await receive()
        digest.update(message.get("body", b""))
        more = message.get("more_body", False)
    answer = f"{digest.hexdigest()} {type(receive.__self__).__name__}".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(answer)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": answer})


def test_the_lean_protocol_takes_over_the_request_before_its_app_runs() -> None:
    # In process, over a real socket: uvicorn must build the request before its task first
    # runs, so the lean protocol can hand it its own receive(); and the body pieces it cuts
    # out must reach the app whole.
    body = bytes(range(256)) * 12_000  # ~3 MiB: more than HIGH_WATER, in many reads

    async def run() -> bytes:
        config = uvicorn.Config(_echo_app, log_level="warning")
        state = uvicorn.server.ServerState()
        factory = guarded_protocol(5.0, 0, "lean")
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: factory(config, state, {}, loop),
                                          "127.0.0.1", 0)  # fmt: skip
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                         "Connection: close\r\n\r\n".encode())  # fmt: skip
            for start in range(0, len(body), 100_000):
                writer.write(body[start : start + 100_000])
                await writer.drain()
            answer = await reader.read()
            writer.close()
            return answer
        finally:
            server.close()

    answer = asyncio.run(run())
    assert answer.startswith(b"HTTP/1.1 200")
    assert answer.endswith(f"{hashlib.sha256(body).hexdigest()} _PieceCycle".encode())


# -- the fallback to uvicorn's own protocol, in a real server --------------------------------


@pytest.fixture
def untested_uvicorn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """`haul serve` as installed, in a process that takes uvicorn for a release never tested."""
    launcher = tmp_path / "haul-on-untested-uvicorn"
    launcher.write_text(
        f"#!{sys.executable}\n"
        "import uvicorn\n"
        "uvicorn.__version__ = '0.99.0'\n"
        "from haul.cli.main import main\n"
        "main()\n"
    )
    launcher.chmod(0o755)
    monkeypatch.setattr(tests.helpers, "HAUL", str(launcher))
    return "0.99.0"


def _upload_and_fetch(server: HaulServer, data: bytes) -> bytes:
    with httpx.Client(trust_env=False, timeout=60) as client:
        created = client.post(server.endpoint, headers={**TUS, "Upload-Length": str(len(data))})
        assert created.status_code == 201
        url = created.headers["location"]
        patched = client.patch(url, content=data, headers={**TUS, "Upload-Offset": "0",
                                                           "Content-Type": OCTETS})  # fmt: skip
        assert patched.status_code == 204, patched.text
        return client.get(url).content


def _connect(server: HaulServer, source: str) -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", server.port))
    sock.settimeout(30)
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closes the connection (True) rather than answering (False)."""
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


def test_an_untested_uvicorn_serves_with_its_own_protocol_still_guarded(
    untested_uvicorn: str, make_server: Callable[..., HaulServer]
) -> None:
    server = make_server("--header-timeout", "2s", "--max-connections-per-client", "3")
    assert server.log_path is not None
    log = server.log_path.read_text()
    assert f"uvicorn {untested_uvicorn} {UNTESTED_WARNING}" in log
    assert "WARNING" in log.split(UNTESTED_WARNING)[0].splitlines()[-1]
    data = __import__("random").Random(7).randbytes(5 << 20)
    assert _upload_and_fetch(server, data) == data
    # The guard holds uvicorn's protocol too: three connections of one client are served...
    served, *trickling = (_connect(server, ATTACKER) for _ in range(3))
    served.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert served.recv(12) == b"HTTP/1.1 200"
    for sock in trickling:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # headers never finished
    # ...a fourth is closed unanswered (over the cap)...
    fourth = _connect(server, ATTACKER)
    with contextlib.suppress(OSError):  # (it may be closed before the request is sent)
        fourth.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _closed_by_server(fourth)
    # ...and the ones whose headers never end are closed at the header deadline.
    assert all(_closed_by_server(sock) for sock in trickling)
    for sock in (served, fourth, *trickling):
        sock.close()


def test_either_http1_protocol_is_chosen_by_name_and_serves(
    make_server: Callable[..., HaulServer],
) -> None:
    data = __import__("random").Random(8).randbytes(3 << 20)
    for server in (make_server("--http1", "uvicorn"), make_server()):
        assert _upload_and_fetch(server, data) == data
        assert server.log_path is not None
        assert UNTESTED_WARNING not in server.log_path.read_text()
    with pytest.raises(RuntimeError, match="not one of lean, uvicorn"):
        make_server("--http1", "h11")


# -- HTTP/2: streams per connection, and rapid reset -----------------------------------------


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[Callable[..., HaulServer]]:
    started: list[HaulServer] = []
    chain, key, ca_file = tls_files(tmp_path)

    def make(*extra: str) -> HaulServer:
        tls = ["--tls-cert", str(chain), "--tls-key", str(key)]
        server = HaulServer(data_dir=tmp_path / f"tls-data{len(started)}", ca_file=ca_file,
                            extra=[*tls, *extra])  # fmt: skip
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()


class RawH2:
    """A client of h2's own over TLS, to send frames the way no polite client would."""

    def __init__(self, server: HaulServer, source: str = "127.0.0.1") -> None:
        tls = ssl.create_default_context(cafile=server.ca_file)
        tls.set_alpn_protocols(["h2"])
        self.sock = tls.wrap_socket(_connect(server, source), server_hostname="127.0.0.1")
        assert self.sock.selected_alpn_protocol() == "h2"
        self.authority = f"127.0.0.1:{server.port}"
        self.conn = H2Connection()
        self.conn.initiate_connection()
        self.events: list[Event] = []
        self.closed = False
        self.flush()

    def flush(self) -> None:
        if data := self.conn.data_to_send():
            self.sock.sendall(data)

    def headers(self, method: str, path: str, **fields: str) -> list[tuple[str, str]]:
        pseudo = [(":method", method), (":path", path), (":scheme", "https"),
                  (":authority", self.authority)]  # fmt: skip
        return pseudo + [(name.replace("_", "-"), value) for name, value in fields.items()]

    def pump(self) -> None:
        """Reads what the server sent (or learns it closed the connection)."""
        try:
            data = self.sock.recv(1 << 16)
        except (ConnectionResetError, ssl.SSLEOFError):
            data = b""
        if not data:
            self.closed = True
            return
        self.events += self.conn.receive_data(data)
        self.flush()

    def until(self, reached: Callable[[], bool]) -> None:
        while not reached():
            assert not self.closed, f"closed by the server; events: {self.events[-5:]}"
            self.pump()

    def settle(self) -> None:
        """Waits for the server's settings and windows."""
        self.until(lambda: self.conn.outbound_flow_control_window > 65535)

    def of(self, kind: type[Event]) -> list[Any]:
        return [event for event in self.events if isinstance(event, kind)]

    def answers(self) -> dict[int, int]:
        """The status of each answered stream."""
        return {event.stream_id: int(dict(event.headers)[b":status"])
                for event in self.of(ResponseReceived)}  # fmt: skip

    def ended(self) -> set[int]:
        return {event.stream_id for event in self.of(StreamEnded)}

    def terminated(self) -> list[ConnectionTerminated]:
        return self.of(ConnectionTerminated)

    def ping(self) -> None:
        """A round trip: everything sent before it has been handled by the server."""
        before = len(self.of(PingAckReceived))
        self.conn.ping(b"fence-ok")
        self.flush()
        self.until(lambda: len(self.of(PingAckReceived)) > before)

    def close(self) -> None:
        self.sock.close()


def test_http2_streams_beyond_the_cap_are_refused_and_the_rest_complete(
    tls_server: Callable[..., HaulServer],
) -> None:
    server = tls_server("--max-requests-per-client", "0")
    client = RawH2(server)
    try:
        # 110 uploads created with their bodies, all at once, before the client has read the
        # server's limit (100): every one waits for its body, so none ends before the last.
        streams = [1 + 2 * n for n in range(110)]
        body = b"fence" * 20
        for stream_id in streams:
            client.conn.send_headers(stream_id, client.headers(
                "POST", "/files/", tus_resumable="1.0.0", upload_length=str(len(body)),
                content_type=OCTETS, content_length=str(len(body))))  # fmt: skip
        client.flush()
        client.until(lambda: len(client.of(StreamReset)) >= 10)
        refused = client.of(StreamReset)
        assert {event.stream_id for event in refused} == set(streams[100:])
        assert {event.error_code for event in refused} == {ErrorCodes.REFUSED_STREAM}
        for stream_id in streams[:100]:
            client.conn.send_data(stream_id, body, end_stream=True)
        client.flush()
        client.until(lambda: set(streams[:100]) <= client.ended())
        assert client.answers() == dict.fromkeys(streams[:100], 201)
        assert not client.terminated()
        client.ping()  # the connection lives on
    finally:
        client.close()


def _patch_headers(client: RawH2, url: str, length: int, offset: int = 0) -> list[tuple[str, str]]:
    return client.headers("PATCH", urlsplit(url).path, tus_resumable="1.0.0",
                          upload_offset=str(offset), content_type=OCTETS,
                          content_length=str(length))  # fmt: skip


def _h1(server: HaulServer, source: str) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=source, verify=server.tls_context())
    return httpx.Client(transport=transport, trust_env=False, timeout=60)


def _offset(client: httpx.Client, url: str) -> int:
    return int(client.head(url, headers=TUS).headers["upload-offset"])


def test_a_rapid_reset_flood_gets_goaway_while_another_upload_completes(
    tls_server: Callable[..., HaulServer],
) -> None:
    server = tls_server()
    data = __import__("random").Random(9).randbytes(24 << 20)
    flood_over = threading.Event()
    outcome: dict[str, Any] = {}

    def body() -> Iterator[bytes]:  # the first third, then the rest once the flood is over
        yield data[: 8 << 20]
        flood_over.wait(60)
        yield data[8 << 20 :]

    def upload(url: str) -> None:
        with httpx.Client(http2=True, verify=server.tls_context(), trust_env=False,
                          timeout=60) as h2:  # fmt: skip
            outcome["patched"] = h2.patch(url, content=body(), headers={
                **TUS, "Upload-Offset": "0", "Content-Type": OCTETS})  # fmt: skip
            outcome["http_version"] = outcome["patched"].http_version

    with _h1(server, OBSERVER) as observer:
        created = observer.post(server.endpoint, headers={**TUS, "Upload-Length": str(len(data))})
        url = created.headers["location"]
        uploader = threading.Thread(target=upload, args=(url,), daemon=True)
        uploader.start()
        wait_for(lambda: _offset(observer, url) > 0, 30)  # the upload is under way
        flood = RawH2(server, ATTACKER)
        try:
            flood.settle()
            for n in range(1000):  # HEADERS and RST_STREAM, a thousand times
                stream_id = 1 + 2 * n
                flood.conn.send_headers(stream_id, flood.headers("GET", "/healthz"),
                                        end_stream=True)  # fmt: skip
                flood.conn.reset_stream(stream_id, ErrorCodes.CANCEL)
                if n % 100 == 99:
                    flood.flush()
            flood.flush()
            while not flood.closed:
                flood.pump()
        finally:
            flood.close()
            flood_over.set()
        uploader.join(60)
        assert "patched" in outcome, "the other client's upload failed"
        calm = [event.error_code for event in flood.terminated()]
        assert calm == [ErrorCodes.ENHANCE_YOUR_CALM]
        assert (outcome["patched"].status_code, outcome["http_version"]) == (204, "HTTP/2")
        assert hashlib.sha256(observer.get(url).content).digest() == hashlib.sha256(data).digest()


def test_a_client_that_cancels_a_few_uploads_is_not_punished(
    tls_server: Callable[..., HaulServer],
) -> None:
    server = tls_server()
    data = __import__("random").Random(10).randbytes(1 << 20)
    with _h1(server, OBSERVER) as observer:
        urls = [observer.post(server.endpoint, headers={**TUS, "Upload-Length": str(len(data))}
                              ).headers["location"] for _ in range(4)]  # fmt: skip
        client = RawH2(server)
        try:
            client.settle()
            for n, url in enumerate(urls[:3]):  # three uploads begun, then cancelled
                stream_id = 1 + 2 * n
                client.conn.send_headers(stream_id, _patch_headers(client, url, len(data)))
                client.conn.send_data(stream_id, data[: 16 << 10])
                client.flush()
                client.conn.reset_stream(stream_id, ErrorCodes.CANCEL)
                client.flush()
            client.conn.send_headers(7, _patch_headers(client, urls[3], len(data)))
            client.conn.send_data(7, data, end_stream=True)
            client.flush()
            client.until(lambda: 7 in client.ended())
            assert client.answers() == {7: 204}
            client.ping()
            assert not client.terminated()
        finally:
            client.close()
        assert observer.get(urls[3]).content == data
        for url in urls[:3]:  # what arrived of a cancelled upload is kept, never more
            assert _offset(observer, url) <= 16 << 10


def test_the_app_never_runs_for_streams_reset_with_their_headers(
    tls_server: Callable[..., HaulServer],
) -> None:
    server = tls_server()
    client = RawH2(server)
    try:
        client.settle()
        creation = client.headers("POST", "/files/", tus_resumable="1.0.0", upload_length="10")
        for n in range(20):  # creations, each reset in the same write as its headers
            client.conn.send_headers(1 + 2 * n, creation, end_stream=True)
            client.conn.reset_stream(1 + 2 * n, ErrorCodes.CANCEL)
        client.flush()
        client.ping()
        client.conn.send_headers(41, creation, end_stream=True)
        client.flush()
        client.until(lambda: 41 in client.ended())
        assert client.answers() == {41: 201}
    finally:
        client.close()
    created = {path.name.split(".")[0] for path in (server.data_dir / "uploads").iterdir()}
    assert len(created) == 1  # only the request that was not reset


def test_a_reset_stream_waiting_for_a_lock_stops_at_once(
    tls_server: Callable[..., HaulServer],
) -> None:
    # A request that has not started on its body (here: waiting for the upload's lock, held
    # by another) and is reset must not keep running: with one request in flight per client,
    # the client's next request is served only once it is gone. Waiting for the lock would
    # take the --lock-timeout (10 minutes).
    server = tls_server("--max-requests-per-client", "1", "--lock-timeout", "600",
                        "--body-timeout", "600", "--min-speed", "0")  # fmt: skip
    length = 4 << 20
    data = __import__("random").Random(11).randbytes(length)
    with _h1(server, OBSERVER) as observer, _h1(server, ATTACKER) as attacker:
        url = observer.post(server.endpoint, headers={**TUS, "Upload-Length": str(length)}
                            ).headers["location"]  # fmt: skip
        tls = ssl.create_default_context(cafile=server.ca_file)
        holder = tls.wrap_socket(_connect(server, "127.0.0.1"), server_hostname="127.0.0.1")
        try:
            head = (
                f"PATCH {urlsplit(url).path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
                f"Upload-Offset: 0\r\nContent-Type: {OCTETS}\r\nContent-Length: {length}\r\n\r\n"
            )
            holder.sendall(head.encode() + data[: length // 2])
            wait_for(lambda: _offset(observer, url) > 0, 30)  # the holder has the lock
            waiter = RawH2(server, ATTACKER)
            try:
                waiter.settle()
                waiter.conn.send_headers(1, _patch_headers(waiter, url, length))
                waiter.flush()
                # The waiter is the attacker's one request in flight: the next is refused.
                wait_for(lambda: attacker.head(url, headers=TUS).status_code == 429, 30)
                waiter.conn.reset_stream(1, ErrorCodes.CANCEL)
                waiter.flush()
                wait_for(lambda: attacker.head(url, headers=TUS).status_code == 200, 30)
                assert not waiter.terminated()
            finally:
                waiter.close()
            holder.sendall(data[length // 2 :])  # the lock's holder was not disturbed
            assert holder.recv(12) == b"HTTP/1.1 204"
        finally:
            holder.close()
        assert observer.get(url).content == data
