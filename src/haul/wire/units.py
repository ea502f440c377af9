"""Sizes as people write them (``1048576``, ``500 MB``, ``10GiB``), for the server's settings
and the client's options alike."""

from __future__ import annotations

import re

SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1000**4, "tb": 1000**4, "tib": 1024**4,
}  # fmt: skip


def parse_size(value: object) -> int:
    """``1048576``, ``"10GiB"``, ``"500 MB"`` → bytes; ValueError for anything else."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(value))
    if not match or match[2].lower() not in SIZE_UNITS:
        raise ValueError(f"not a size: {value!r} (try 1048576, 500MB or 10GiB)")
    return int(float(match[1]) * SIZE_UNITS[match[2].lower()])
