"""Which kinds of file a server takes: the policy's rules, and the server enforcing them."""

from __future__ import annotations

import base64
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from haul.config import load_settings
from haul.core.policy import TypePolicy
from haul.errors import ConfigError, TypeNotAllowed
from tests.helpers import OCTETS, TUS, HaulServer


def meta(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


@pytest.mark.parametrize(
    ("name", "declared", "allowed"),
    [
        ("photo.JPG", None, True),  # endings ignore case
        ("scan.png", "image/png", True),
        ("notes.txt", "text/plain", True),
        ("archive.tar.gz", None, True),  # multi-part ending
        ("photo.jpg.exe", None, False),  # denied ending wins
        ("report.pdf", None, False),  # not in the allow list
        ("renamed.bin", "image/png", True),  # declared type matches image/*
        ("picture.png", "application/x-msdownload", False),  # a denied declared type
        (None, None, False),  # nothing to judge by while an allow list is set
    ],
)
def test_policy_rules(name: str | None, declared: str | None, allowed: bool) -> None:
    policy = TypePolicy.of(
        [".jpg", ".txt", ".tar.gz", "image/*"], [".exe", "application/x-msdownload"]
    )
    if allowed:
        policy.check(name, declared)
    else:
        with pytest.raises(TypeNotAllowed):
            policy.check(name, declared)


def test_no_policy_allows_everything() -> None:
    TypePolicy.of([], []).check(None, None)
    TypePolicy.of([], []).check("anything.exe", "application/x-msdownload")


@pytest.mark.parametrize("entry", ["jpg", "image", "*"])
def test_malformed_entries_are_config_errors(entry: str) -> None:
    with pytest.raises(ConfigError, match="neither a file ending"):
        load_settings(overrides={"allowed_types": entry})


def test_server_refuses_other_kinds_at_creation_with_415(
    make_server: Callable[..., HaulServer],
) -> None:
    server = make_server("--allowed-types", ".txt,image/*", "--denied-types", ".svg")
    with httpx.Client(trust_env=False) as client:

        def create(metadata: str | None, **extra: str) -> httpx.Response:
            headers = {**TUS, "Upload-Length": "10", **extra}
            if metadata is not None:
                headers["Upload-Metadata"] = metadata
            return client.post(server.endpoint, headers=headers)

        assert create(meta(filename="a.txt")).status_code == 201
        assert create(meta(filename="b.png")).status_code == 201
        refused = create(meta(filename="c.pdf", filetype="application/pdf"))
        assert refused.status_code == 415
        assert refused.text.startswith("ERR_TYPE_NOT_ALLOWED: c.pdf (application/pdf) is not")
        assert create(meta(filename="d.svg")).status_code == 415  # image/* but denied
        assert create(None).status_code == 415  # unnamed
        # Partial uploads carry no name; their final upload is judged instead.
        part = create(None, **{"Upload-Concat": "partial"})
        assert part.status_code == 201
        part_url = part.headers["location"]
        client.patch(
            part_url,
            content=b"0123456789",
            headers={
                **TUS,
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
            },
        ).raise_for_status()
        final = {**TUS, "Upload-Concat": f"final;{part_url}"}
        refused_final = client.post(
            server.endpoint, headers={**final, "Upload-Metadata": meta(filename="e.exe")}
        )
        assert refused_final.status_code == 415
        accepted = client.post(
            server.endpoint, headers={**final, "Upload-Metadata": meta(filename="e.txt")}
        )
        assert accepted.status_code == 201
        info = client.get(server.url + "/api/info").json()
    assert info["allowed_types"] == [".txt", "image/*"]
    assert info["denied_types"] == [".svg"]


ELF = b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 64  # 16 KiB, an executable's header
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(1000)
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(1000)


def _upload(
    client: httpx.Client, server: HaulServer, name: str, data: bytes, first: int | None = None
) -> tuple[str, list[httpx.Response]]:
    """Create ``name`` and send ``data`` in up to two PATCHes; the answers of each."""
    created = client.post(
        server.endpoint,
        headers={**TUS, "Upload-Length": str(len(data)), "Upload-Metadata": meta(filename=name)},
    )
    assert created.status_code == 201, created.text
    url = created.headers["location"]
    answers = []
    cut = first if first is not None else len(data)
    for start, stop in ((0, cut), (cut, len(data))):
        if start == stop:
            continue
        answer = client.patch(
            url,
            content=data[start:stop],
            headers={**TUS, "Upload-Offset": str(start), "Content-Type": OCTETS},
        )
        answers.append(answer)
        if answer.status_code != 204:
            break
    return url, answers


def test_bytes_that_contradict_the_name_are_refused_as_soon_as_they_arrive(
    make_server: Callable[..., HaulServer], client: httpx.Client
) -> None:
    server = make_server("--allowed-types", ".jpg,.png,.txt")
    url, answers = _upload(client, server, "holiday.jpg", ELF, first=10_000)
    assert [a.status_code for a in answers] == [415]  # the first PATCH already told
    assert answers[0].text == (
        "ERR_TYPE_NOT_ALLOWED: holiday.jpg is an ELF executable; executables are refused\n"
    )
    assert client.head(url, headers=TUS).status_code == 410
    assert not server.upload_path(url).exists()  # nothing of it is kept

    url, answers = _upload(client, server, "photo.jpg", PNG)
    assert answers[0].status_code == 415
    assert "claims to be image/jpeg, but its bytes are image/png" in answers[0].text
    assert client.get(url).status_code == 410

    script = b"#!/bin/sh\nrm -rf ~\n"
    assert _upload(client, server, "notes.txt", script)[1][0].status_code == 415
    url, answers = _upload(client, server, "photo.jpg", JPEG)
    assert answers[0].status_code == 204
    assert client.get(url).content == JPEG
    url, answers = _upload(client, server, "notes.txt", b"just text")
    assert client.get(url).content == b"just text"


def test_concatenated_uploads_are_judged_by_their_first_bytes(
    make_server: Callable[..., HaulServer], client: httpx.Client
) -> None:
    server = make_server("--allowed-types", ".jpg")
    parts = []
    for piece in (ELF[:9000], ELF[9000:]):
        created = client.post(
            server.endpoint,
            headers={**TUS, "Upload-Length": str(len(piece)), "Upload-Concat": "partial"},
        )
        url = created.headers["location"]
        client.patch(
            url, content=piece, headers={**TUS, "Upload-Offset": "0", "Content-Type": OCTETS}
        ).raise_for_status()
        parts.append(url)
    final = client.post(
        server.endpoint,
        headers={
            **TUS,
            "Upload-Concat": "final;" + " ".join(parts),
            "Upload-Metadata": meta(filename="cat.jpg"),
        },
    )
    assert final.status_code == 415
    assert "ELF executable" in final.text
    for part in parts:  # the parts are gone with it
        assert client.head(part, headers=TUS).status_code == 410
        assert not server.upload_path(part).exists()


def test_no_policy_means_no_content_checks(server: HaulServer, client: httpx.Client) -> None:
    url, answers = _upload(client, server, "tool.jpg", ELF)
    assert answers[0].status_code == 204
    assert client.get(url).content == ELF


SCANNER = """
import sys, time
data = sys.stdin.buffer.read()
if b"SLOW" in data:
    time.sleep(30)
if b"EICAR" in data:
    print("Eicar-Test-Signature FOUND")
    sys.exit(1)
"""


def test_scan_command_keeps_refused_uploads_from_being_served(
    make_server: Callable[..., HaulServer], client: httpx.Client, tmp_path: Path
) -> None:
    scanner = tmp_path / "scan.py"
    scanner.write_text(SCANNER)
    server = make_server("--scan-command", f"{sys.executable} {scanner}", "--scan-timeout", "2s")
    url, answers = _upload(client, server, "clean.txt", b"nothing to see" * 1000)
    assert answers[0].status_code == 204
    assert client.get(url).status_code == 200

    url, answers = _upload(client, server, "bad.txt", b"prefix EICAR suffix" * 10)
    assert answers[0].status_code == 422
    assert answers[0].text == (
        "ERR_SCAN_REJECTED: the file was refused by the scanner: Eicar-Test-Signature FOUND\n"
    )
    assert client.get(url).status_code == 410
    assert not server.upload_path(url).exists()

    url, answers = _upload(client, server, "slow.txt", b"SLOW")
    assert answers[0].status_code == 422
    assert "did not finish within 2 s" in answers[0].text


def test_names_in_refusals_cannot_inject_lines(
    make_server: Callable[..., HaulServer], client: httpx.Client
) -> None:
    server = make_server("--allowed-types", ".txt")
    name = "evil\r\nX-Injected: yes\r\n\r\nreport.pdf"
    refused = client.post(
        server.endpoint,
        headers={**TUS, "Upload-Length": "5", "Upload-Metadata": meta(filename=name)},
    )
    assert refused.status_code == 415
    assert refused.text.count("\n") == 1  # one line: CODE: message
    assert "\r" not in refused.text
    assert "x-injected" not in refused.headers
    assert server.log_path is not None
    assert not any(
        line.lower().startswith("x-injected") for line in server.log_path.read_text().splitlines()
    )
