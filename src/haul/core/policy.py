"""Which kinds of file an upload may be: judged first by the name and type its metadata
declares, then by its first bytes (magic numbers), which must agree.

Entries starting with ``.`` are file-name endings (``.jpg``, ``.tar.gz``); entries with a ``/``
are media types, optionally with a wildcard subtype (``image/*``). Denied entries win over
allowed ones; an empty allow list allows anything not denied. Once any policy is set,
executables (ELF, PE, Mach-O, scripts with a shebang) are refused unless allowed by their type.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Iterable
from dataclasses import dataclass

import filetype

from haul.errors import ConfigError, TypeNotAllowed
from haul.wire.http import safe_filename

# Metadata keys that name the file and its type, as tus-js-client, Uppy and haul send them.
NAME_KEYS = ("filename", "name")
TYPE_KEYS = ("filetype", "type", "contentType", "content-type")
SNIFF_BYTES = 8192  # enough for every signature filetype knows

# Checked here rather than left to a library: these are the ones a policy must never miss.
EXECUTABLES = (
    (b"\x7fELF", "application/x-elf", "an ELF executable"),
    (b"MZ", "application/x-msdownload", "a Windows (PE) executable"),
    (b"\xfe\xed\xfa\xce", "application/x-mach-binary", "a Mach-O executable"),
    (b"\xfe\xed\xfa\xcf", "application/x-mach-binary", "a Mach-O executable"),
    (b"\xce\xfa\xed\xfe", "application/x-mach-binary", "a Mach-O executable"),
    (b"\xcf\xfa\xed\xfe", "application/x-mach-binary", "a Mach-O executable"),
    (b"\xca\xfe\xba\xbe", "application/x-mach-binary", "a Mach-O universal binary"),
    (b"#!", "text/x-shellscript", "a script with a #! line"),
)
# Types whose signatures are reliable enough to call a differing name a lie. Containers such
# as zip are left out: .docx, .jar and .epub are all zip files.
_TELLING = ("image/", "video/", "audio/", "application/pdf")
_ALIASES = {"image/jpg": "image/jpeg", "audio/mp3": "audio/mpeg", "audio/x-wav": "audio/wav"}


def sniff(head: bytes) -> tuple[str | None, str | None]:
    """(media type, executable description) of content starting with ``head``."""
    for magic, media_type, description in EXECUTABLES:
        if head.startswith(magic):
            return media_type, description
    kind = filetype.guess(head) if head else None
    return (kind.mime if kind else None), None


def _canonical(media_type: str) -> str:
    return _ALIASES.get(media_type, media_type)


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
        described = f"{safe_filename(name) if name else 'a file without a name'}" + (
            f" ({', '.join(sorted(types))})" if types else ""
        )
        denied = [e for e in self.denied if _matches(e, name, types)]
        if denied:
            raise TypeNotAllowed(f"{described} is a denied kind of file ({denied[0]})")
        if self.allowed and not any(_matches(e, name, types) for e in self.allowed):
            raise TypeNotAllowed(
                f"{described} is not an allowed kind of file; allowed: {', '.join(self.allowed)}"
            )

    def check_content(self, head: bytes, name: str | None, media_type: str | None) -> None:
        """Raise TypeNotAllowed when the first bytes show a refused kind, or a different kind
        than the name and declared type say."""
        if not self.active:
            return
        sniffed, executable = sniff(head)
        if sniffed is None:
            return  # plain text and unknown formats: the name decided
        label = safe_filename(name) if name else "the file"  # messages reach logs and clients
        if executable and not any(_matches(e, "", {sniffed}) for e in self.allowed if "/" in e):
            raise TypeNotAllowed(f"{label} is {executable}; executables are refused")
        if any(_matches(e, "", {sniffed}) for e in self.denied):
            raise TypeNotAllowed(f"the bytes of {label} are {sniffed}, a denied type")
        claimed = {
            _canonical(t.split(";")[0].strip().lower())
            for t in (media_type, mimetypes.guess_type(name)[0] if name else None)
            if t
        }
        telling = _canonical(sniffed).startswith(_TELLING)
        lies = [t for t in claimed if t.startswith(_TELLING) and t != _canonical(sniffed)]
        if telling and lies:
            raise TypeNotAllowed(f"{label} claims to be {lies[0]}, but its bytes are {sniffed}")
        if self.allowed and telling and not any(_names_type(e, sniffed) for e in self.allowed):
            raise TypeNotAllowed(f"the bytes of {label} are {sniffed}, not an allowed type")


def _names_type(entry: str, media_type: str) -> bool:
    """Whether an entry covers a media type; an ending covers the type it stands for."""
    if entry.startswith("."):
        guessed = mimetypes.guess_type("file" + entry)[0]
        return guessed is not None and _canonical(guessed) == _canonical(media_type)
    return _matches(entry, "", {media_type})


def _matches(entry: str, name: str, types: set[str]) -> bool:
    if entry.startswith("."):
        return bool(name) and name.endswith(entry)
    if entry.endswith("/*"):
        return any(t.startswith(entry[:-1]) for t in types)
    return entry in types
