"""The draft's codecs per interop version, checked against the examples in the draft texts."""

from __future__ import annotations

import json

import pytest

from haul.errors import InvalidHeader
from haul.wire import ietf


def test_interop_3_speaks_upload_incomplete_with_the_opposite_sense() -> None:
    draft = ietf.parse_interop_version("3")
    assert draft.complete_field == "Upload-Incomplete"
    assert draft.parse_complete({"upload-incomplete": "?1"}) is False
    assert draft.parse_complete({"upload-incomplete": "?0"}) is True
    assert draft.parse_complete({"upload-complete": "?1"}) is None
    assert draft.complete_value(True) == "?0"


@pytest.mark.parametrize("version", [4, 5, 6, 7, 8, 9])
def test_interop_4_on_speaks_upload_complete(version: int) -> None:
    draft = ietf.parse_interop_version(str(version))
    assert draft.complete_field == "Upload-Complete"
    assert draft.parse_complete({"upload-complete": "?1"}) is True
    assert draft.parse_complete({"upload-complete": "?0;x=1"}) is False
    assert draft.complete_value(False) == "?0"


@pytest.mark.parametrize(
    ("version", "partial", "limits", "age"),
    [
        (3, False, False, "expires"),
        (5, False, False, "expires"),
        (6, True, True, "expires"),
        (7, True, True, "max-age"),
        (8, True, True, "max-age"),
        (9, True, True, "max-age"),
    ],
)
def test_what_each_version_adds(version: int, partial: bool, limits: bool, age: str) -> None:
    draft = ietf.Draft(version)
    assert (draft.partial_upload_type, draft.limits, draft.problems) == (partial, limits, limits)
    assert draft.upload_length is (version >= 6)
    assert draft.age_key == age
    assert draft.limit_value(1000000000, 3600) == f"max-size=1000000000, {age}=3600"
    assert draft.limit_value(None, 60, 1 << 20) == f"max-append-size=1048576, {age}=60"
    # draft-12 (interop 9): never an empty Upload-Limit, but min-size=0 (its section 4.1.4).
    assert draft.limit_value(None, None) == ("min-size=0" if version >= 9 else None)


@pytest.mark.parametrize("version", [6, 7, 8, 9])
def test_what_draft_12_changes(version: int) -> None:
    draft = ietf.Draft(version)
    before = version < 9
    # draft-10 required Accept-Patch on OPTIONS; draft-12 removed it, and the completed-upload
    # problem type with it; every answer of draft-12 says Upload-Complete, GET reads the offset.
    assert draft.accept_patch is before
    assert draft.completed_problem is before
    assert draft.response_complete is not before
    assert draft.offset_by_get is not before
    assert draft.always_limits is not before


def test_the_offered_versions_are_a_structured_list() -> None:
    assert ietf.offered_versions() == "3, 4, 5, 6, 7, 8, 9"
    assert ietf.parse_integer_list(ietf.offered_versions()) == list(ietf.VERSIONS)
    assert ietf.parse_integer_list("8, x, -1, 9;a=1, ") == [8, 9]


@pytest.mark.parametrize("value", ["2", "10", "x", "", "-6", "06 7"])
def test_unknown_interop_versions_are_refused(value: str) -> None:
    with pytest.raises(InvalidHeader):
        ietf.parse_interop_version(value)


@pytest.mark.parametrize("value", ["1", "true", "?2", "? 1", ""])
def test_booleans_are_structured_fields(value: str) -> None:
    with pytest.raises(InvalidHeader):
        ietf.parse_boolean(value, "Upload-Complete")


def test_integers_and_dictionaries() -> None:
    assert ietf.parse_integer(" 25 ", "Upload-Offset") == 25
    assert ietf.parse_integer("25;a=1", "Upload-Offset") == 25
    for bad in ("-1", "1.5", "0x10", "", "1234567890123456"):
        with pytest.raises(InvalidHeader):
            ietf.parse_integer(bad, "Upload-Offset")
    limits = ietf.parse_dictionary("max-size=1000000000, max-age=3600", "Upload-Limit")
    assert limits == {"max-size": 1000000000, "max-age": 3600}
    with pytest.raises(InvalidHeader):
        ietf.parse_dictionary("max-size", "Upload-Limit")


def test_file_names_from_content_disposition() -> None:
    assert ietf.filename_from_disposition('attachment; filename="a \\"b\\".txt"') == 'a "b".txt'
    assert ietf.filename_from_disposition("attachment; filename=plain.bin") == "plain.bin"
    both = "attachment; filename=\"fallback.txt\"; filename*=UTF-8''%C3%A9t%C3%A9.txt"
    assert ietf.filename_from_disposition(both) == "été.txt"
    assert ietf.filename_from_disposition("attachment") is None


def test_problem_bodies_match_the_draft_examples() -> None:
    body = json.loads(ietf.mismatching_offset(100, 200))
    assert body == {
        "type": "https://iana.org/assignments/http-problem-types#mismatching-upload-offset",
        "title": "offset from request does not match offset of resource",
        "expected-offset": 100,
        "provided-offset": 200,
    }
    kind = json.loads(ietf.inconsistent_length())["type"]
    assert kind == "https://iana.org/assignments/http-problem-types#inconsistent-upload-length"
    assert json.loads(ietf.completed_upload())["title"] == "upload is already completed"
