"""Which kinds of file a server takes: the policy's rules, and the server enforcing them."""

from __future__ import annotations

import base64
from collections.abc import Callable

import httpx
import pytest

from haul.config import load_settings
from haul.core.policy import TypePolicy
from haul.errors import ConfigError, TypeNotAllowed
from tests.helpers import TUS, HaulServer


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
