"""The kinds of value a setting takes: each parser turns what a TOML file, a HAUL_* variable or a
CLI option gave into the setting's type, or raises ConfigError with a message a person reads."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import field
from typing import Any

from haul.errors import ConfigError
from haul.wire.units import parse_size as wire_parse_size

_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_size(value: object) -> int:
    """``1048576``, ``"10GiB"``, ``"500 MB"`` → bytes."""
    try:
        return wire_parse_size(value)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def parse_duration(value: object) -> float:
    """``90``, ``"30s"``, ``"15m"``, ``"24h"``, ``"7d"`` → seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhd]?)\s*", str(value))
    if not match:
        raise ConfigError(f"not a duration: {value!r} (try 30, 30s, 15m, 24h or 7d)")
    return float(match[1]) * _DURATION_UNITS[match[2]]


def parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"not a boolean: {value!r} (use true or false)")


def parse_int(value: object) -> int:
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise ConfigError(f"not an integer: {value!r}") from None
    if number < 0:
        raise ConfigError(f"must not be negative: {value!r}")
    return number


def parse_float(value: object) -> float:
    try:
        number = float(value) if isinstance(value, int | float) else float(str(value).strip())
    except ValueError:
        raise ConfigError(f"not a number: {value!r}") from None
    if number < 0:
        raise ConfigError(f"must not be negative: {value!r}")
    return number


def parse_list(value: object) -> tuple[str, ...]:
    if isinstance(value, list | tuple):
        return tuple(str(v).strip() for v in value if str(v).strip())
    return tuple(part.strip() for part in str(value).split(",") if part.strip())


def parse_choice(*choices: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise ConfigError(f"{value!r} is not one of {', '.join(choices)}")
        return text

    return parse


def setting(default: Any, help: str, parse: Callable[[object], Any] = str) -> Any:
    return field(default=default, metadata={"help": help, "parse": parse})
