"""The multipart parser of /upload-chunk fuzzed in-process: forms built part by part (missing
parts, unknown ones, huge fields, odd names), cut short anywhere, or garbage. Each answer is a
200 for a form that is whole and right, a 400 otherwise; never a 500."""

from __future__ import annotations

import asyncio
import hashlib

import hypothesis
import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from tests.inprocess import asgi_client, memory_service

pytestmark = pytest.mark.fast
FILE_HASH = hashlib.md5(b"whatever").hexdigest()
NAMES = ["chunk", "index", "fileHash", "chunkHash", "totalChunks", "fileName", "other", ""]
FUZZ = hypothesis.settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)

part = st.tuples(
    st.sampled_from(NAMES) | st.text(max_size=8),
    st.none() | st.text(max_size=8),  # a filename
    st.sampled_from([b"", b"0", b"7", b"-1", FILE_HASH.encode(), b"x" * 9000])
    | st.binary(max_size=300),
)


def encode(parts: list[tuple[str, str | None, bytes]], boundary: str) -> bytes:
    out = bytearray()
    for name, filename, data in parts:
        named = name.replace('"', "").replace("\r", "").replace("\n", "")
        disposition = f'form-data; name="{named}"'
        if filename is not None:
            disposition += f'; filename="{filename.replace(chr(34), "")}"'
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode(
            "utf-8", "replace"
        )
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)


def well_formed(parts: list[tuple[str, str | None, bytes]]) -> bool:
    names = [name for name, _, _ in parts]
    fields = {name: data for name, _, data in parts}
    known = [n for n in names if n in NAMES[1:6]]
    return (
        names.count("chunk") == 1
        and len(known) == len(set(known))
        and "" not in names
        and fields.get("index", b"").isdigit()
        and int(fields.get("index", b"0") or 0) < 100_000
        and fields.get("fileHash") == FILE_HASH.encode()
        and "chunkHash" not in fields
        and "totalChunks" not in fields
        and len(fields.get("fileName", b"")) <= 4096
        and all(
            len(data) <= 4096 and data.decode("utf-8", "replace") == data.decode("utf-8", "ignore")
            for name, _, data in parts
            if name in NAMES[1:6]
        )
        and len(parts) <= 32
    )


def post(body: bytes, content_type: str) -> tuple[int, str]:
    async def run() -> tuple[int, str]:
        async with asgi_client(memory_service()) as http:
            answer = await http.post(
                "/upload-chunk", content=body, headers={"Content-Type": content_type}
            )
            return answer.status_code, answer.text

    return asyncio.run(run())


@FUZZ
@given(
    parts=st.lists(part, max_size=6),
    boundary=st.sampled_from(["b", "----WebKitFormBoundaryX1y2", "a" * 70]),
    cut=st.none() | st.integers(min_value=0, max_value=20_000),
)
def test_forms_part_by_part_get_200_or_400(
    parts: list[tuple[str, str | None, bytes]], boundary: str, cut: int | None
) -> None:
    body = encode(parts, boundary)
    whole = cut is None or cut >= len(body)
    status, text = post(body if whole else body[:cut], f"multipart/form-data; boundary={boundary}")
    assert status in (200, 400), text
    if status == 200:
        assert whole
        assert names_have_a_chunk(parts)
    elif whole and well_formed(parts):
        raise AssertionError(f"a well-formed form was refused: {text}")


def names_have_a_chunk(parts: list[tuple[str, str | None, bytes]]) -> bool:
    return [name for name, _, _ in parts].count("chunk") == 1


@FUZZ
@given(
    body=st.binary(max_size=2000),
    content_type=st.sampled_from(
        [
            "multipart/form-data; boundary=x",
            "multipart/form-data",
            "multipart/form-data; boundary=",
            "multipart/form-data; boundary=" + "z" * 80,
            "text/plain",
            "",
        ]
    ),
)
def test_garbage_gets_400(body: bytes, content_type: str) -> None:
    status, text = post(body, content_type)
    assert status == 400, text
