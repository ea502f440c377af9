"""IETF "Resumable Uploads for HTTP" (draft-ietf-httpbis-resumable-upload): what differs per
interop version, and the structured fields (RFC 8941) and problem bodies it sends.

Each interop version (``Upload-Draft-Interop-Version``) and the draft revisions that define it
(httpwg/http-extensions, draft-ietf-httpbis-resumable-upload.md at each revision's tag):

====  ===========  =========================================================================
 3    draft-01     ``Upload-Incomplete: ?1`` marks an unfinished request
 4    draft-02     ``Upload-Complete: ?0/?1`` replaces it
 5    draft-03     104 informational responses report progress
 6    draft-04/05  appends carry ``Content-Type: application/partial-upload``; ``Upload-Limit``
                   (``expires``); problem type ``mismatching-upload-offset``; ``Upload-Length``
                   and limits on OPTIONS (draft-05)
 7    draft-06/08  limit ``expires`` renamed ``max-age``; problem ``inconsistent-upload-length``
 8    draft-09/11  limits announced on every creation; 104 described in its own section;
                   ``Accept-Patch`` on OPTIONS (draft-10)
 9    draft-12     ``Upload-Complete`` in responses says whether the answer is the target's
                   (?1) or the protocol's (?0): errors such as a wrong offset carry ?0; the
                   ``completed-upload`` problem type is gone (a valid request to a completed
                   upload may replay its final answer); OPTIONS drops ``Accept-Patch`` and
                   must carry ``Upload-Limit`` (``min-size=0`` when nothing is limited); GET
                   retrieves the offset like HEAD; ``max-age``'s implied end never moves
                   earlier; a 413 should carry the limits
====  ===========  =========================================================================

Interop 9 is draft-12 as published (July 2026) and as its implementations speak it; the main
branch text just before it still named 8 in its appendix.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import unquote

INTEROP_HEADER = "upload-draft-interop-version"
PARTIAL_UPLOAD_TYPE = "application/partial-upload"
PROBLEM_TYPE = "application/problem+json"
PROBLEM_BASE = "https://iana.org/assignments/http-problem-types#"
VERSIONS = (3, 4, 5, 6, 7, 8, 9)
# haul's own OPTIONS answer header listing VERSIONS, so a client can pick the newest it shares
# (the drafts define no such discovery; haul's client reads it).
VERSIONS_HEADER = "Upload-Draft-Interop-Versions"
_INTEGER = re.compile(r"-?[0-9]{1,15}")


@dataclass(frozen=True)
class Draft:
    """One interop version: the fields and rules a request of that version follows."""

    version: int

    @property
    def complete_field(self) -> str:
        """The header saying whether a request ends the upload (its sense flips at 4)."""
        return "Upload-Incomplete" if self.version < 4 else "Upload-Complete"

    @property
    def partial_upload_type(self) -> bool:
        """Appends must be ``application/partial-upload``."""
        return self.version >= 6

    @property
    def upload_length(self) -> bool:
        return self.version >= 6

    @property
    def limits(self) -> bool:
        return self.version >= 6

    @property
    def problems(self) -> bool:
        """Errors the draft types carry problem+json bodies."""
        return self.version >= 6

    @property
    def accept_patch(self) -> bool:
        """OPTIONS names ``application/partial-upload`` in Accept-Patch (dropped in draft-12)."""
        return 6 <= self.version < 9

    @property
    def completed_problem(self) -> bool:
        """Appending to a completed upload is the ``completed-upload`` problem (draft-04..-11)."""
        return 6 <= self.version < 9

    @property
    def response_complete(self) -> bool:
        """Every answer says ``Upload-Complete``: ?1 when it comes from the finished upload's
        processing, ?0 from the protocol, errors included (draft-12)."""
        return self.version >= 9

    @property
    def offset_by_get(self) -> bool:
        """GET on an upload retrieves its offset as HEAD does (draft-12)."""
        return self.version >= 9

    @property
    def always_limits(self) -> bool:
        """``Upload-Limit`` on OPTIONS, HEAD and creations even when nothing is limited, as
        ``min-size=0``; ``max-age`` counted down from the upload's own expiry (draft-12)."""
        return self.version >= 9

    @property
    def age_key(self) -> str:
        return "expires" if self.version < 7 else "max-age"

    def complete_value(self, complete: bool) -> str:
        return format_boolean(complete if self.version >= 4 else not complete)

    def parse_complete(self, headers: dict[str, str]) -> bool | None:
        """Whether the request says it completes the upload; None when it says nothing."""
        raw = headers.get(self.complete_field.lower())
        if raw is None:
            return None
        value = parse_boolean(raw, self.complete_field)
        return value if self.version >= 4 else not value

    def limit_value(
        self, max_size: int | None, max_age: int | None, max_append: int | None = None
    ) -> str | None:
        members = {"max-size": max_size, "max-append-size": max_append, self.age_key: max_age}
        value = format_dictionary({k: v for k, v in members.items() if v is not None})
        if not value and self.always_limits:
            return "min-size=0"  # draft-12: never an empty Upload-Limit
        return value or None


def _invalid(message: str) -> Exception:
    # Imported when needed: haul's client shares these codecs and loads nothing of the server.
    from haul.errors import InvalidHeader

    return InvalidHeader(message)


def offered_versions() -> str:
    return ", ".join(map(str, VERSIONS))


def parse_integer_list(value: str) -> list[int]:
    """An RFC 8941 List of Integers (``Upload-Draft-Interop-Versions``); members that are not
    non-negative integers are left out, as a reader of someone else's answer should."""
    found = []
    for member in value.split(","):
        item = member.split(";", 1)[0].strip()
        if _INTEGER.fullmatch(item) and not item.startswith("-"):
            found.append(int(item))
    return found


def parse_interop_version(value: str) -> Draft:
    text = value.strip()
    if not _INTEGER.fullmatch(text) or int(text) not in VERSIONS:
        known = ", ".join(map(str, VERSIONS))
        raise _invalid(f"Upload-Draft-Interop-Version {text!r} is not one of {known}")
    return Draft(int(text))


def parse_boolean(value: str, field: str) -> bool:
    """An RFC 8941 Boolean item: ``?1`` or ``?0`` (parameters are ignored)."""
    item = value.split(";", 1)[0].strip()
    if item == "?1":
        return True
    if item == "?0":
        return False
    raise _invalid(f"{field} must be ?0 or ?1, not {value.strip()!r}")


def format_boolean(value: bool) -> str:
    return "?1" if value else "?0"


def parse_integer(value: str, field: str) -> int:
    """An RFC 8941 Integer item that counts bytes, so never negative."""
    item = value.split(";", 1)[0].strip()
    if not _INTEGER.fullmatch(item) or item.startswith("-"):
        raise _invalid(f"{field} must be a non-negative integer, not {value.strip()!r}")
    return int(item)


def format_dictionary(members: dict[str, int]) -> str:
    return ", ".join(f"{key}={value}" for key, value in members.items())


def parse_dictionary(value: str, field: str) -> dict[str, int]:
    """An RFC 8941 Dictionary whose values are Integers (``Upload-Limit``)."""
    found: dict[str, int] = {}
    for member in value.split(","):
        key, sep, item = member.strip().partition("=")
        if not re.fullmatch(r"[a-z*][a-z0-9_.*-]*", key) or not sep:
            raise _invalid(f"{field} member {member.strip()!r} is not key=integer")
        found[key] = parse_integer(item, field)
    return found


def filename_from_disposition(value: str) -> str | None:
    """The file name a ``Content-Disposition`` field gives (RFC 6266): ``filename*`` (RFC 8187,
    UTF-8) over ``filename``; None when there is none."""
    params: dict[str, str] = {}
    for match in re.finditer(r';\s*([A-Za-z*]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)', value):
        raw = match[2].strip()
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[match[1].lower()] = raw
    extended = params.get("filename*")
    if extended is not None:
        charset, _, rest = extended.partition("'")
        _, _, encoded = rest.partition("'")
        if charset.lower() == "utf-8" and encoded:
            return unquote(encoded, encoding="utf-8", errors="replace")
    name = params.get("filename")
    return name or None


def problem(kind: str, title: str, **members: int) -> bytes:
    """A problem+json body (RFC 9457) of one of the draft's problem types."""
    body: dict[str, object] = {"type": PROBLEM_BASE + kind, "title": title, **members}
    return json.dumps(body).encode()


def mismatching_offset(expected: int, provided: int) -> bytes:
    return problem(
        "mismatching-upload-offset",
        "offset from request does not match offset of resource",
        **{"expected-offset": expected, "provided-offset": provided},
    )


def inconsistent_length() -> bytes:
    return problem("inconsistent-upload-length", "inconsistent length values for upload")


def completed_upload() -> bytes:
    return problem("completed-upload", "upload is already completed")
