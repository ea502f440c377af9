"""Interop version 9 (draft-ietf-httpbis-resumable-upload-12) against a real `haul serve`, over
raw sockets: what draft-12 changes from draft-11 (interop 8), each test citing the draft's
section. The behaviour every version shares is in test_ietf_conformance.py, which runs for 9
too."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable

import httpx

from tests.helpers import HaulServer, wait_for
from tests.test_ietf_conformance import (
    PROBLEMS,
    Wire,
    append_headers,
    create,
    download,
    path_of,
    request,
)

V9 = {"Upload-Draft-Interop-Version": "9"}
LIMITS = f"max-size={64 << 20}, max-age=3600"


def _limited(make_server: Callable[..., HaulServer]) -> HaulServer:
    return make_server(
        "--max-size", "64MiB", "--expiration", "1h", "--ietf-progress-interval", "64KiB"
    )


def _digest(data: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode() + ":"


def test_options_announces_the_limits_and_no_accept_patch(
    make_server: Callable[..., HaulServer],
) -> None:
    # 4.1.4: an OPTIONS without Upload-Complete MUST carry Upload-Limit; min-size=0 when the
    # server limits nothing, never an empty value. Draft-12 removed Accept-Patch from it.
    limited = _limited(make_server)
    options = request(limited, "OPTIONS", "/files/", V9)
    assert options.status in (200, 204)
    assert options.headers["upload-limit"] == LIMITS
    assert "accept-patch" not in options.headers
    assert options.headers["upload-draft-interop-versions"] == "3, 4, 5, 6, 7, 8, 9"
    unlimited = make_server("--expiration", "0")
    assert request(unlimited, "OPTIONS", "/files/", V9).headers["upload-limit"] == "min-size=0"
    # The tus answer of the same endpoint names the versions too (haul's discovery).
    tus = httpx.options(unlimited.endpoint, trust_env=False, timeout=30)
    assert tus.headers["upload-draft-interop-versions"] == "3, 4, 5, 6, 7, 8, 9"


def test_the_creation_104_comes_with_location_limits_and_the_100_is_kept(
    make_server: Callable[..., HaulServer],
) -> None:
    # 4.2.2: the 104 MUST include Location and Upload-Limit; Appendix: and the interop version.
    # Section 5: a server MUST NOT omit 100 (Continue) because it sent a 104.
    server = _limited(make_server)
    data = os.urandom(200_000)
    wire = Wire(server)
    try:
        wire.send("POST", "/files/", {**V9, "Upload-Complete": "?1", "Expect": "100-continue",
                                      "Content-Length": str(len(data))})  # fmt: skip
        seen = [wire.next_informational()]
        if seen[0][0] != 100:
            seen.append(wire.next_informational())
        statuses = sorted(status for status, _ in seen)
        assert statuses == [100, 104]
        first = next(headers for status, headers in seen if status == 104)
        assert first["upload-draft-interop-version"] == "9"
        assert first["upload-limit"] == LIMITS
        wire.sock.sendall(data)
        answer = wire.answer()
    finally:
        wire.close()
    assert answer.status == 201
    assert answer.headers["location"] == first["location"]  # identical in every message
    assert answer.headers["upload-complete"] == "?1"
    assert answer.headers["repr-digest"] == _digest(data)
    assert download(server, first["location"]).content == data


def test_a_wrong_offset_is_the_protocols_answer(server: HaulServer) -> None:
    # 4.4.2: a mismatching offset MUST be a 409 with Upload-Complete: ?0 and the right offset.
    created = create(server, 9)
    path = path_of(created.headers["location"])
    assert request(server, "PATCH", path, append_headers(9, 0, False), b"x" * 100).status == 204
    wrong = request(server, "PATCH", path, append_headers(9, 40, False), b"y" * 10)
    assert wrong.status == 409
    assert wrong.headers["upload-complete"] == "?0"
    assert wrong.headers["upload-offset"] == "100"
    assert wrong.headers["content-type"] == "application/problem+json"
    assert json.loads(wrong.body) == {
        "type": PROBLEMS + "mismatching-upload-offset",
        "title": "offset from request does not match offset of resource",
        "expected-offset": 100,
        "provided-offset": 40,
    }


def test_conflicting_lengths_say_upload_complete_false(server: HaulServer) -> None:
    # 4.1.3 and the example of section 9.2: inconsistent-upload-length, Upload-Complete: ?0.
    headers = {**V9, "Upload-Complete": "?1", "Upload-Length": "20"}
    answer = request(server, "POST", "/files/", headers, b"0123456789")
    assert answer.status == 400
    assert answer.headers["upload-complete"] == "?0"
    assert json.loads(answer.body)["type"] == PROBLEMS + "inconsistent-upload-length"


def test_a_completed_upload_replays_its_answer_to_a_valid_request(server: HaulServer) -> None:
    # 4.4.2: a client whose final answer was lost may append again after an offset retrieval;
    # the server can replay the final answer to a valid request. The completed-upload problem
    # type is gone: other requests are invalid operations, answered with Upload-Complete: ?0.
    data = os.urandom(50_000)
    created = request(server, "POST", "/files/", {**V9, "Upload-Complete": "?1"}, data)
    assert created.headers["upload-complete"] == "?1"
    path = path_of(created.headers["location"])
    state = request(server, "HEAD", path, V9)
    assert state.headers["upload-complete"] == "?1"
    assert state.headers["upload-offset"] == str(len(data))
    replay = request(server, "PATCH", path, append_headers(9, len(data), True))
    assert replay.status == 204
    assert replay.headers["upload-complete"] == "?1"
    assert replay.headers["upload-offset"] == str(len(data))
    assert replay.headers["repr-digest"] == _digest(data)
    stale = request(server, "PATCH", path, append_headers(9, 10, True), b"z")
    assert stale.status == 409
    assert stale.headers["upload-complete"] == "?0"
    assert json.loads(stale.body)["expected-offset"] == len(data)
    past = request(server, "PATCH", path, append_headers(9, len(data), True), b"z")
    assert past.status == 400
    assert past.headers["upload-complete"] == "?0"
    assert json.loads(past.body)["type"] == PROBLEMS + "inconsistent-upload-length"
    assert download(server, created.headers["location"]).content == data


def test_get_retrieves_the_offset_and_a_plain_get_still_downloads(server: HaulServer) -> None:
    # 4.3: HEAD or GET retrieve the offset; draft-12 added GET. Without the interop header a
    # GET stays haul's download.
    created = request(server, "POST", "/files/", {**V9, "Upload-Complete": "?0",
                                                  "Upload-Length": "6"}, b"abc")  # fmt: skip
    path = path_of(created.headers["location"])
    state = request(server, "GET", path, V9)
    assert state.status == 204
    assert state.headers["upload-offset"] == "3"
    assert state.headers["upload-complete"] == "?0"
    assert state.headers["upload-length"] == "6"
    assert state.headers["cache-control"] == "no-store"
    assert "upload-limit" in state.headers
    assert state.body == b""
    done = request(server, "PATCH", path, append_headers(9, 3, True), b"def")
    assert done.status == 204
    assert download(server, created.headers["location"]).content == b"abcdef"


def test_max_age_counts_down_and_each_write_renews_it(
    make_server: Callable[..., HaulServer],
) -> None:
    # 4.1.4: max-age is the remaining lifetime counted from the response; the end it implies
    # SHOULD NOT move earlier between responses. haul's uploads expire a fixed time after
    # their last write, so max-age falls while nothing arrives and is whole again after a write.
    server = _limited(make_server)
    created = create(server, 9)
    path = path_of(created.headers["location"])

    def age() -> int:
        limits = request(server, "HEAD", path, V9).headers["upload-limit"]
        return int(limits.split("max-age=")[1])

    wait_for(lambda: age() < 3600)
    assert request(server, "PATCH", path, append_headers(9, 0, False), b"abc").status == 204
    assert age() >= 3599
    done = request(server, "PATCH", path, append_headers(9, 3, True), b"d")
    assert done.status == 204
    # A complete upload does not expire: no max-age, the size limit still stands.
    assert request(server, "HEAD", path, V9).headers["upload-limit"] == f"max-size={64 << 20}"


def test_a_413_names_the_limits(make_server: Callable[..., HaulServer]) -> None:
    # 4.1.4: a server answering 413 because of its upload limits SHOULD include Upload-Limit.
    server = _limited(make_server)
    headers = {**V9, "Upload-Complete": "?0", "Upload-Length": str(128 << 20)}
    answer = request(server, "POST", "/files/", headers)
    assert answer.status == 413
    assert answer.headers["upload-limit"] == LIMITS
    assert answer.headers["upload-complete"] == "?0"


def test_a_digest_that_does_not_match_is_the_uploads_final_answer(server: HaulServer) -> None:
    # 4.1.2: Upload-Complete: ?1 on an answer means the target's semantics apply and the client
    # SHOULD NOT resume: a representation whose Repr-Digest fails is such an answer.
    data = b"the representation"
    headers = {**V9, "Upload-Complete": "?1", "Repr-Digest": _digest(b"something else")}
    answer = request(server, "POST", "/files/", headers, data)
    assert answer.status == 422
    assert answer.headers["upload-complete"] == "?1"


def test_an_interrupted_append_reports_progress_without_location(
    make_server: Callable[..., HaulServer],
) -> None:
    # 4.4.2: progress 104s carry Upload-Offset and MUST NOT carry Location; an interrupted
    # append keeps what was processed, and HEAD then says Upload-Complete: ?0.
    server = _limited(make_server)
    data = os.urandom(12 << 20)
    # More than the server holds in memory (4 blocks of 1 MiB): reading the rest has to wait
    # for stored blocks, so some piece arrives once the storage offset has moved, and a 104
    # follows however slow the machine is.
    sent = (8 << 20) + 17
    created = create(server, 9)
    path = path_of(created.headers["location"])
    wire = Wire(server)
    wire.send("PATCH", path, {**append_headers(9, 0, True), "Content-Length": str(len(data))},
              data[:sent])  # fmt: skip
    status, progress = wire.next_informational()
    assert status == 104
    assert "location" not in progress
    assert 0 < int(progress["upload-offset"]) <= sent

    def offset() -> int:  # -1 while the upload is busy (423)
        return int(request(server, "HEAD", path, V9).headers.get("upload-offset", "-1"))

    wire.close()
    wait_for(lambda: offset() == sent)
    assert request(server, "HEAD", path, V9).headers["upload-complete"] == "?0"
    rest = request(server, "PATCH", path, append_headers(9, sent, True), data[sent:])
    assert rest.status == 204
    assert rest.headers["upload-complete"] == "?1"
    assert download(server, created.headers["location"]).content == data


def test_the_offset_never_passes_the_length(server: HaulServer) -> None:
    # 4.4.2: with the length known, the server MUST keep the offset from exceeding it, and
    # Content-Length is not enough to rely on: a chunked body is held to it too.
    created = request(server, "POST", "/files/", {**V9, "Upload-Complete": "?0",
                                                  "Upload-Length": "10"}, b"abc")  # fmt: skip
    path = path_of(created.headers["location"])
    declared = request(server, "PATCH", path, append_headers(9, 3, False), b"x" * 12)
    assert declared.status == 413
    assert declared.headers["upload-complete"] == "?0"
    wire = Wire(server)
    try:
        wire.send("PATCH", path, {**append_headers(9, 3, False), "Transfer-Encoding": "chunked"},
                  b"c\r\n" + b"y" * 12 + b"\r\n0\r\n\r\n")  # fmt: skip
        chunked = wire.answer()
    finally:
        wire.close()
    assert chunked.status == 413
    state = request(server, "HEAD", path, V9)
    assert state.headers["upload-offset"] == "3"
    assert state.headers["upload-complete"] == "?0"
    done = request(server, "PATCH", path, append_headers(9, 3, True), b"defghij")
    assert done.status == 204
    assert download(server, created.headers["location"]).content == b"abcdefghij"


def test_max_append_size_is_announced_and_held_to(make_server: Callable[..., HaulServer]) -> None:
    # 4.1.4: max-append-size bounds one append's content and, from draft-12 on, a creation's;
    # the server might reject larger requests, and says so with its limits in the 413.
    cap = 64 << 10
    server = make_server("--max-size", "64MiB", "--expiration", "1h",
                         "--ietf-max-append-size", "64KiB")  # fmt: skip
    limits = f"max-size={64 << 20}, max-append-size={cap}, max-age=3600"
    assert request(server, "OPTIONS", "/files/", V9).headers["upload-limit"] == limits
    created = create(server, 9)
    assert created.headers["upload-limit"] == limits
    path = path_of(created.headers["location"])
    data = os.urandom(cap + 1)
    declared = request(server, "PATCH", path, append_headers(9, 0, False), data)
    assert declared.status == 413
    assert declared.headers["upload-limit"] == limits
    assert declared.headers["upload-complete"] == "?0"
    wire = Wire(server)
    try:
        wire.send("PATCH", path, {**append_headers(9, 0, False), "Transfer-Encoding": "chunked"},
                  b"%x\r\n" % len(data) + data + b"\r\n0\r\n\r\n")  # fmt: skip
        assert wire.answer().status == 413
    finally:
        wire.close()
    assert request(server, "HEAD", path, V9).headers["upload-offset"] == "0"  # none of it kept
    assert request(server, "PATCH", path, append_headers(9, 0, False), data[:cap]).status == 204
    last = request(server, "PATCH", path, append_headers(9, cap, True), data[cap:])
    assert last.status == 204
    assert download(server, created.headers["location"]).content == data
    # A creation's content is held to it from draft-12 on; before, only appends were.
    whole = {"Upload-Complete": "?1"}
    listed = httpx.get(server.url + "/api/uploads", trust_env=False).json()["uploads"]
    refused = request(server, "POST", "/files/", {**V9, **whole}, data)
    assert refused.status == 413
    assert "location" not in refused.headers
    # Refused before anything was made: no upload left behind to expire.
    assert httpx.get(server.url + "/api/uploads", trust_env=False).json()["uploads"] == listed
    older = request(server, "POST", "/files/", {"Upload-Draft-Interop-Version": "8", **whole}, data)
    assert older.status == 201
