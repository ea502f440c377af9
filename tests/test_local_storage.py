"""The local storage's own guarantees, checked on its files directly: every intermediate state
of replacing an upload's bytes by shared ones reads as one complete representation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from haul.storage.local import LocalStorage

pytestmark = pytest.mark.fast


async def _read(storage: LocalStorage, upload_id: str, size: int) -> bytes:
    return b"".join([block async for block in storage.read(upload_id, 0, size)])


def _parts(directory: Path, *pieces: bytes) -> None:
    directory.mkdir()
    for index, piece in enumerate(pieces):
        (directory / f"{index:06d}").write_bytes(piece)


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ({".parts": [b"ab", b"cd"], "": b"", ".assembling": [b"zz", b"zz"]}, b"abcd"),
        ({".old": [b"ab", b"cd"], ".assembling": [b"zz", b"zz"]}, b"abcd"),
        ({".parts": [b"wx", b"yz"], ".old": [b"ab", b"cd"]}, b"wxyz"),
        ({".parts": [b"ab", b"cd"], "": b"wxyz"}, b"abcd"),
        ({".old": [b"ab", b"cd"], "": b"wxyz"}, b"wxyz"),
        ({".old": [b"ab"], "": b"wxyz"}, b"wxyz"),  # a half-removed .old never shows
    ],
)
async def test_every_step_of_a_swap_reads_complete(tmp_path: Path, layout, expected) -> None:
    storage = LocalStorage(tmp_path)
    for suffix, content in layout.items():
        path = tmp_path / f"u{suffix}"
        if isinstance(content, list):
            _parts(path, *content)
        else:
            path.write_bytes(content)
    assert await _read(storage, "u", 4) == expected
    assert await storage.offset("u") == len(expected)


async def test_share_replaces_segments_with_a_shared_file(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    (tmp_path / "src").write_bytes(b"abcd")
    _parts(tmp_path / "dst.parts", b"ab", b"cd")
    assert await storage.share("src", "dst")
    assert await _read(storage, "dst", 4) == b"abcd"
    assert os.stat(tmp_path / "dst").st_ino == os.stat(tmp_path / "src").st_ino
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst", "src"]


async def test_share_replaces_segments_with_shared_segments(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    _parts(tmp_path / "src.parts", b"a", b"bcd")
    _parts(tmp_path / "dst.parts", b"ab", b"cd")
    assert await storage.share("src", "dst")
    assert await _read(storage, "dst", 4) == b"abcd"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst.parts", "src.parts"]
    assert (tmp_path / "dst.parts" / "000001").stat().st_ino == (
        tmp_path / "src.parts" / "000001"
    ).stat().st_ino


async def test_share_from_a_vanished_source_changes_nothing(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    (tmp_path / "dst").write_bytes(b"mine")
    assert not await storage.share("gone", "dst")
    assert (tmp_path / "dst").read_bytes() == b"mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst"]
