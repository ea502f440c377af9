"""Which kinds of file an upload may be, judged by the name and type its metadata declares.

Entries starting with ``.`` are file-name endings (``.jpg``, ``.tar.gz``); entries with a ``/``
are media types, optionally with a wildcard subtype (``image/*``). Denied entries win over
allowed ones; an empty allow list allows anything not denied.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Iterable
from dataclasses import dataclass

from haul.errors import ConfigError, TypeNotAllowed


def _normalise(entries: Iterable[str]) -> tuple[str, ...]:
    result = []
    for raw in entries:
        entry = raw.strip().lower()
        if not entry:
            continue
        if not (entry.startswith(".") or "/" in entry):
            raise ConfigError(f"{raw!r} is neither a file ending (.jpg) nor a type (image/*)")
        result.append(entry)
    return tuple(result)


@dataclass(frozen=True)
class TypePolicy:
    allowed: tuple[str, ...] = ()
    denied: tuple[str, ...] = ()

    @classmethod
    def of(cls, allowed: Iterable[str], denied: Iterable[str]) -> TypePolicy:
        return cls(_normalise(allowed), _normalise(denied))

    @property
    def active(self) -> bool:
        return bool(self.allowed or self.denied)

    def check(self, name: str | None, media_type: str | None) -> None:
        """Raise TypeNotAllowed unless a file so named and typed may be uploaded."""
        if not self.active:
            return
        name = (name or "").strip().lower()
        types = {t for t in (media_type, mimetypes.guess_type(name)[0] if name else None) if t}
        types = {t.split(";")[0].strip().lower() for t in types}
        described = f"{name or 'a file without a name'}" + (
            f" ({', '.join(sorted(types))})" if types else ""
        )
        denied = [e for e in self.denied if _matches(e, name, types)]
        if denied:
            raise TypeNotAllowed(f"{described} is a denied kind of file ({denied[0]})")
        if self.allowed and not any(_matches(e, name, types) for e in self.allowed):
            raise TypeNotAllowed(
                f"{described} is not an allowed kind of file; allowed: {', '.join(self.allowed)}"
            )


def _matches(entry: str, name: str, types: set[str]) -> bool:
    if entry.startswith("."):
        return bool(name) and name.endswith(entry)
    if entry.endswith("/*"):
        return any(t.startswith(entry[:-1]) for t in types)
    return entry in types
