"""Fuzz the running server with hostile header values and bodies: never a 500, never a
malformed request accepted, and accepted data is never damaged."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import OCTETS, TUS, HaulServer, create, head, patch

header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)
numberish = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["", " ", "0x10", "1e3", "+1", "1.0", "٣", "00000000000000000000001"]),
    header_text,
)
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _raw(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    """Header values as UTF-8 bytes, so non-ASCII reaches the server as a client could send it."""
    return [(k.encode(), v.encode()) for k, v in headers.items()]


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory) -> Iterator[HaulServer]:
    server = HaulServer(data_dir=tmp_path_factory.mktemp("fuzz") / "data",
                        extra=["--max-size", "1MiB"]).start()  # fmt: skip
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fuzz_client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30, trust_env=False) as c:
        yield c


@FUZZ
@given(
    length=st.one_of(st.none(), numberish),
    defer=st.one_of(st.none(), numberish),
    metadata=st.one_of(st.none(), header_text),
    concat=st.one_of(st.none(), header_text, st.just("partial"), st.just("final;/files/x")),
    checksum=st.one_of(st.none(), header_text),
    content_type=st.one_of(st.none(), st.just(OCTETS), header_text),
    body=st.binary(max_size=64),
)
def test_creation_never_fails_with_500(
    fuzz_server, fuzz_client, length, defer, metadata, concat, checksum, content_type, body
) -> None:
    headers = dict(TUS)
    for name, value in (
        ("Upload-Length", length), ("Upload-Defer-Length", defer), ("Upload-Metadata", metadata),
        ("Upload-Concat", concat), ("Upload-Checksum", checksum), ("Content-Type", content_type),
    ):  # fmt: skip
        if value is not None:
            headers[name] = value.strip()
    response = fuzz_client.post(fuzz_server.endpoint, headers=_raw(headers), content=body)
    assert response.status_code < 500, response.text
    if response.status_code == 201:
        assert length is not None or defer is not None or concat is not None
    else:
        assert response.status_code >= 400
        code = response.text.split(":", 1)[0]
        assert code.startswith("ERR_"), response.text


@FUZZ
@given(
    offset=numberish,
    new_length=st.one_of(st.none(), numberish),
    checksum=st.one_of(st.none(), header_text),
    content_type=st.one_of(st.just(OCTETS), header_text),
    body=st.binary(max_size=64),
)
def test_patch_never_fails_with_500_nor_damages_data(
    fuzz_server, fuzz_client, offset, new_length, checksum, content_type, body
) -> None:
    url = create(fuzz_client, fuzz_server, 8)
    assert patch(fuzz_client, url, 0, b"good").status_code == 204
    headers = {**TUS, "Upload-Offset": offset.strip(), "Content-Type": content_type.strip()}
    if new_length is not None:
        headers["Upload-Length"] = new_length.strip()
    if checksum is not None:
        headers["Upload-Checksum"] = checksum.strip()
    response = fuzz_client.patch(url, headers=_raw(headers), content=body)
    assert response.status_code < 500, response.text
    current = int(head(fuzz_client, url).headers["upload-offset"])
    if response.status_code == 204:
        assert offset.strip() == "4"
        assert len(body) <= 4
        assert current == 4 + len(body)
    else:
        assert current == 4  # a refused request leaves the upload untouched
    stored = (fuzz_server.data_dir / "uploads" / url.rsplit("/", 1)[1]).read_bytes()
    assert stored[:4] == b"good"


@FUZZ
@given(
    method=st.sampled_from(["GET", "HEAD", "DELETE", "PATCH", "OPTIONS", "POST", "PUT"]),
    path=st.text(alphabet="abcdef0123456789/.%-_~xyz", max_size=40),
    range_header=st.one_of(
        st.none(), header_text, st.from_regex(r"bytes=[0-9]{0,21}-[0-9]{0,21}", fullmatch=True)
    ),
    tus_version=st.one_of(st.none(), st.just("1.0.0"), header_text),
)
def test_any_path_and_method_never_fails_with_500(
    fuzz_server, fuzz_client, method, path, range_header, tus_version
) -> None:
    headers = {}
    if range_header is not None:
        headers["Range"] = range_header.strip()
    if tus_version is not None:
        headers["Tus-Resumable"] = tus_version.strip()
    response = fuzz_client.request(method, f"{fuzz_server.url}/files/{path}", headers=_raw(headers))
    assert response.status_code < 500, response.text


def test_download_range_fuzz_on_a_real_upload(fuzz_server, fuzz_client) -> None:
    url = create(fuzz_client, fuzz_server, 10)
    patch(fuzz_client, url, 0, b"0123456789")

    @FUZZ
    @given(st.from_regex(r"bytes=[0-9]{0,3}-[0-9]{0,3}", fullmatch=True))
    def check(range_header: str) -> None:
        response = fuzz_client.get(url, headers={"Range": range_header})
        assert response.status_code in (200, 206, 416)
        if response.status_code == 206:
            first, last = response.headers["content-range"].split(" ")[1].split("/")[0].split("-")
            assert response.content == b"0123456789"[int(first) : int(last) + 1]
        if response.status_code == 200:
            assert response.content == b"0123456789"

    check()
