"""Pure helpers: header codecs, ranges, filenames, settings."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from haul.config import ConfigError, load_settings, parse_duration, parse_size
from haul.errors import InvalidHeader, InvalidMetadata, RangeNotSatisfiable
from haul.wire.http import (
    content_disposition,
    parse_idempotency_key,
    parse_range,
    safe_filename,
)
from haul.wire.tus import encode_metadata, parse_concat, parse_metadata, parse_uint
from tests.helpers import HAUL

pytestmark = pytest.mark.fast

keys = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E,
                                      exclude_characters=","), min_size=1, max_size=20)  # fmt: skip


@given(st.dictionaries(keys, st.binary(max_size=50), max_size=8))
def test_metadata_round_trip(metadata: dict[str, bytes]) -> None:
    assert parse_metadata(encode_metadata(metadata)) == metadata


@given(st.text(max_size=60))
def test_metadata_parser_accepts_or_raises_cleanly(raw: str) -> None:
    try:
        parse_metadata(raw)
    except InvalidMetadata as exc:
        error = exc
    else:
        return
    assert error.status == 400


@pytest.mark.parametrize("value", ["", "-1", "1.5", " 1 2", "0x1", "9" * 20, "\u0661"])
def test_uint_rejects(value: str) -> None:
    with pytest.raises(InvalidHeader):
        parse_uint(value, "Upload-Offset")


def test_uint_accepts_surrounding_space() -> None:
    assert parse_uint(" 42 ", "Upload-Length") == 42


def test_concat_parsing() -> None:
    assert parse_concat("partial").partial
    final = parse_concat("final;/files/a http://h/files/b")
    assert final.parts == ("/files/a", "http://h/files/b")
    assert parse_concat("final; /files/a").parts == ("/files/a",)


@given(st.integers(min_value=0, max_value=10_000), st.text(max_size=30))
def test_range_parser_never_crashes(size: int, header: str) -> None:
    try:
        span = parse_range(header, size)
    except RangeNotSatisfiable:
        return
    if span is not None:
        start, end = span
        assert 0 <= start <= end < size


@given(st.text(max_size=300))
def test_idempotency_keys_are_accepted_whole_or_refused(header: str) -> None:
    try:
        key = parse_idempotency_key(header)
    except ValueError:
        return
    assert 1 <= len(key) <= 255
    assert all(33 <= ord(c) <= 126 and c not in '"\\' for c in key)
    assert key in header  # nothing added, nothing rewritten
    assert parse_idempotency_key(f'"{key}"') == parse_idempotency_key(key) == key


@given(st.text(max_size=300))
def test_safe_filename_has_no_dangerous_characters(name: str) -> None:
    safe = safe_filename(name)
    assert safe
    assert len(safe) <= 200
    assert not any(c in safe for c in '/\\"\r\n\x00;')
    assert safe not in (".", "..")
    header = content_disposition(name)
    assert "\r" not in header
    assert "\n" not in header
    header.encode("latin-1")  # always a valid header value


def test_sizes_and_durations() -> None:
    assert parse_size("10GiB") == 10 * 1024**3
    assert parse_size("500 MB") == 500_000_000
    assert parse_size(7) == 7
    assert parse_duration("24h") == 86400
    assert parse_duration("1.5m") == 90
    with pytest.raises(ConfigError):
        parse_size("ten")
    with pytest.raises(ConfigError):
        parse_duration("-1s")


def test_settings_precedence(tmp_path: Path) -> None:
    config = tmp_path / "haul.toml"
    config.write_text('[haul]\nport = 9000\nmax-size = "1GiB"\nexpiration = "2h"\n')
    settings = load_settings(config, environ={"HAUL_PORT": "9100", "HAUL_FSYNC": "false"},
                             overrides={"port": "9200"})  # fmt: skip
    assert settings.port == 9200
    assert settings.max_size == 1024**3
    assert settings.expiration == 7200
    assert settings.fsync is False
    assert load_settings(config, environ={"HAUL_PORT": "9100"}).port == 9100
    assert load_settings(config, environ={}).port == 9000


def test_settings_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings(overrides={"colour": "blue"}, environ={})
    with pytest.raises(ConfigError, match="max_size"):
        load_settings(environ={"HAUL_MAX_SIZE": "huge"})
    with pytest.raises(ConfigError, match="base_path"):
        load_settings(environ={"HAUL_BASE_PATH": "files"})


def test_serve_help_documents_every_setting() -> None:
    from haul.config import Settings

    text = subprocess.run([HAUL, "serve", "--help"], capture_output=True, text=True,
                          check=True).stdout  # fmt: skip
    for name, _default, _help in Settings.declared():
        assert f"--{name.replace('_', '-')}" in text
        assert f"HAUL_{name.upper()}" in text.replace("\n", "").replace(" ", "")


def test_bad_cli_value_is_a_usage_error() -> None:
    result = subprocess.run([HAUL, "serve", "--max-size", "lots"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "max_size" in result.stderr


def test_readme_documents_every_setting() -> None:
    from haul.config import Settings

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for name, _default, _help in Settings.declared():
        assert f"| `{name}` | `--{name.replace('_', '-')}" in readme, name
        assert f"`HAUL_{name.upper()}`" in readme, name
