"""The server's HTTP interface as an OpenAPI 3.1 document (served at /openapi.json), for people
and for the fuzzer in the test suite."""

from __future__ import annotations

from typing import Any

import haul
from haul.config import Settings
from haul.http.direct import MAX_PARTS
from haul.http.openapi_chunks import chunk_paths

_UINT = {"type": "integer", "minimum": 0}
_ERROR = {
    "description": "`CODE: message`",
    "content": {"text/plain": {"schema": {"type": "string"}}},
}


def _header(
    name: str, schema: dict[str, Any], description: str, required: bool = False
) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": required,
        "schema": schema,
        "description": description,
    }


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): _ERROR for code in codes}


TUS_RESUMABLE = _header(
    "Tus-Resumable", {"type": "string", "enum": ["1.0.0"]}, "Protocol version.", True
)
AUTHORIZATION = _header(
    "Authorization", {"type": "string"}, "`Bearer <API key or JWT>` when required."
)
UPLOAD_ID = {
    "name": "upload_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
}
COMMON = (401, 403, 404, 410, 412, 429)
BEARER = {
    "type": "http",
    "scheme": "bearer",
    "description": "An API key or a JWT; without one, the anonymous owner when allowed.",
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _object(required: tuple[str, ...] = (), **properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required)}


_KEY = {"type": "string", "pattern": "^[0-9a-f]{32}$", "description": "The haul upload id."}
_STRING = {"type": "string"}
MULTIPART_ID = {
    "name": "uploadId",
    "in": "path",
    "required": True,
    "schema": _STRING,
    "description": "The store's multipart upload id, as the creation answered it.",
}
KEY = {"name": "key", "in": "query", "required": True, "schema": _KEY}
_PART_NUMBER = {"type": "integer", "minimum": 1, "maximum": MAX_PARTS}
PART_NUMBER = {"name": "partNumber", "in": "path", "required": True, "schema": _PART_NUMBER}
MD5 = {
    "name": "md5",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9+/]{22}==$"},
    "description": "The part's MD5 (base64): the URL is signed with it as Content-MD5, and "
    "the store refuses a part whose bytes hash otherwise.",
}
_PARTS_GIVEN = _object(
    ("parts",),
    parts={
        "type": "array",
        "minItems": 1,
        "items": _object(("PartNumber", "ETag"), PartNumber=_PART_NUMBER, ETag=_STRING),
    },
    sha256={
        "type": "string",
        "pattern": "^[0-9a-fA-F]{64}$",
        "description": "The file's SHA-256 (hex), verified against the stored bytes "
        "(in the background on an object store).",
    },
)
_PARTS_STORED = {
    "type": "array",
    "items": _object(
        ("PartNumber", "Size", "ETag"), PartNumber=_PART_NUMBER, Size=_UINT, ETag=_STRING
    ),
}


def _direct_paths(anonymous_allowed: bool) -> dict[str, Any]:
    """Direct upload to S3 (haul.http.direct), mounted only when the storage is S3: the
    contract of Uppy's @uppy/aws-s3 in companion mode."""
    security: list[dict[str, list[str]]] = [{"bearer": []}]
    if anonymous_allowed:
        security.insert(0, {})  # no credentials at all is fine too
    return {
        "/s3/multipart": {
            "post": {
                "summary": "Create an upload whose parts go straight to the store",
                "security": security,
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": _object(
                                filename=_STRING,
                                type={**_STRING, "description": "The media type."},
                                metadata={"type": "object"},
                            )
                        }
                    },
                },
                "responses": {
                    "200": _json(
                        _object(("key", "uploadId"), key=_KEY, uploadId=_STRING), "created"
                    ),
                    **_errors(400, 401, 403, 415, 429, 503),
                },
            },
        },
        "/s3/multipart/{uploadId}": {
            "parameters": [MULTIPART_ID, KEY],
            "get": {
                "summary": "The parts the store holds",
                "security": security,
                "responses": {
                    "200": _json(_PARTS_STORED, "the parts, as the store lists them"),
                    **_errors(401, 403, 404, 410, 429),
                },
            },
            "delete": {
                "summary": "Abort: the upload and its parts are removed",
                "security": security,
                "responses": {
                    "204": {"description": "aborted"},
                    **_errors(401, 403, 404, 410, 423, 429),
                },
            },
        },
        "/s3/multipart/{uploadId}/{partNumber}": {
            "parameters": [MULTIPART_ID, PART_NUMBER, KEY, MD5],
            "get": {
                "summary": "A presigned URL to PUT this part to",
                "security": security,
                "responses": {
                    "200": _json(
                        _object(
                            ("url", "expires"),
                            url={"type": "string", "format": "uri"},
                            expires={**_UINT, "description": "Seconds the URL is valid."},
                            headers={
                                "type": "object",
                                "description": "Headers the PUT must send (Content-MD5).",
                                "additionalProperties": _STRING,
                            },
                        ),
                        "the URL",
                    ),
                    **_errors(400, 401, 403, 404, 410, 429),
                },
            },
        },
        "/s3/multipart/{uploadId}/complete": {
            "parameters": [MULTIPART_ID, KEY],
            "post": {
                "summary": "Complete from the store's parts, after the usual checks",
                "security": security,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _PARTS_GIVEN}},
                },
                "responses": {
                    "200": _json(
                        _object(
                            ("location", "key"),
                            location={"type": "string", "format": "uri"},
                            key=_KEY,
                        ),
                        "complete; location is its tus URL",
                    ),
                    **_errors(400, 401, 403, 404, 410, 413, 415, 422, 423, 429),
                },
            },
        },
    }


def document(settings: Settings) -> dict[str, Any]:
    base = settings.base_path
    direct = _direct_paths(settings.anonymous_allowed) if settings.storage == "s3" else {}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "haul",
            "version": haul.__version__,
            "description": (
                "tus 1.0.0 (core, creation, creation-with-upload, creation-defer-length, "
                "expiration, termination, checksum, concatenation) with Repr-Digest "
                "verification, instant upload with proof of possession, and downloads."
            ),
        },
        "paths": {
            "/healthz": {"get": {"responses": {"200": {"description": "alive"}}}},
            "/api/info": {"get": {"responses": {"200": {"description": "limits and features"}}}},
            **_uploads_api(),
            **_metrics(settings),
            **chunk_paths(settings),
            base: {
                "options": {
                    "summary": "What the server supports",
                    "responses": {
                        "204": {"description": "Tus-Version, Tus-Extension, Tus-Max-Size"}
                    },
                },
                "post": {
                    "summary": "Create an upload (with its first bytes, or as a concatenation)",
                    "parameters": [
                        TUS_RESUMABLE,
                        AUTHORIZATION,
                        _header("Upload-Length", _UINT, "Total length in bytes."),
                        _header(
                            "Upload-Defer-Length",
                            {"type": "string", "enum": ["1"]},
                            "Length later.",
                        ),
                        _header("Upload-Metadata", {"type": "string"}, "key base64value pairs."),
                        _header(
                            "Upload-Concat", {"type": "string"}, "`partial` or `final;<urls>`."
                        ),
                        _header("Upload-Checksum", {"type": "string"}, "`<algorithm> <base64>`."),
                        _header(
                            "Repr-Digest",
                            {"type": "string"},
                            "`sha-256=:<base64>:` of the whole upload.",
                        ),
                        _header(
                            "Idempotency-Key",
                            {"type": "string", "minLength": 1, "maxLength": 257},
                            "A random key: the same creation sent again with it answers with "
                            "the upload the first one made (not for final uploads, which are "
                            "matched by their partials).",
                        ),
                    ],
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/offset+octet-stream": {
                                "schema": {"type": "string", "format": "binary"}
                            }
                        },
                    },
                    "responses": {
                        "201": {"description": "created; Location names it"},
                        **_errors(400, *COMMON, 409, 413, 415, 422, 423, 460, 503, 507),
                    },
                },
            },
            base + "{upload_id}": {
                "parameters": [UPLOAD_ID],
                "head": {
                    "summary": "Offset, length, metadata, digest",
                    "parameters": [TUS_RESUMABLE, AUTHORIZATION],
                    "responses": {
                        "200": {"description": "Upload-Offset and friends"},
                        **_errors(*COMMON, 423),
                    },
                },
                "patch": {
                    "summary": "Append bytes at Upload-Offset (or answer a Haul-Challenge)",
                    "parameters": [
                        TUS_RESUMABLE,
                        AUTHORIZATION,
                        _header("Upload-Offset", _UINT, "Where the body starts.", True),
                        _header("Upload-Length", _UINT, "Declares a deferred length."),
                        _header("Upload-Checksum", {"type": "string"}, "`<algorithm> <base64>`."),
                        _header("Haul-Proof", {"type": "string"}, "Answer to a Haul-Challenge."),
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/offset+octet-stream": {
                                "schema": {"type": "string", "format": "binary"}
                            }
                        },
                    },
                    "responses": {
                        "204": {"description": "stored; Upload-Offset is the new offset"},
                        **_errors(400, *COMMON, 408, 409, 413, 415, 422, 423, 460, 499, 507),
                    },
                },
                "delete": {
                    "summary": "Terminate the upload",
                    "parameters": [TUS_RESUMABLE, AUTHORIZATION],
                    "responses": {"204": {"description": "terminated"}, **_errors(*COMMON, 423)},
                },
                "get": {
                    "summary": "Download (Range supported)",
                    "parameters": [
                        AUTHORIZATION,
                        _header("Range", {"type": "string"}, "bytes=first-last"),
                        {"name": "expires", "in": "query", "schema": {"type": "string"}},
                        {"name": "signature", "in": "query", "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": {"description": "the bytes"},
                        "206": {"description": "a range of the bytes"},
                        "304": {"description": "not modified"},
                        **_errors(*COMMON, 409, 416, 423),
                    },
                },
            },
            **direct,
        },
        "components": {"securitySchemes": {"bearer": BEARER}},
    }


_ITEM = {
    "type": "object",
    "required": ["id", "url", "state", "length", "offset", "metadata", "sha256", "created"],
    "properties": {
        "id": {"type": "string"},
        "url": {"type": "string"},
        "state": {"type": "string", "enum": ["active", "complete"]},
        "length": {"type": ["integer", "null"]},
        "offset": {"type": "integer"},
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        "sha256": {"type": ["string", "null"]},
        "created": {"type": "string", "format": "date-time"},
        "updated": {"type": "string", "format": "date-time"},
        "expires": {"type": ["string", "null"], "format": "date-time"},
    },
}


def _uploads_api() -> dict[str, Any]:
    listing = {"type": "object", "properties": {
        "uploads": {"type": "array", "items": _ITEM},
        "next": {"type": ["string", "null"], "description": "cursor of the next page"},
    }}  # fmt: skip
    query = [
        {"name": "state", "in": "query", "schema": {"type": "string",
                                                    "enum": ["active", "complete"]}},
        {"name": "since", "in": "query", "schema": {"type": "string"},
         "description": "RFC 3339 time or seconds since 1970: created at or after"},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                    "maximum": 1000}},
        {"name": "cursor", "in": "query", "schema": {"type": "string"},
         "description": "`next` of the previous page"},
    ]  # fmt: skip
    return {
        "/api/uploads": {
            "get": {
                "summary": "The caller's uploads, oldest first (partials left out)",
                "parameters": [AUTHORIZATION, *query],
                "responses": {"200": _json(listing, "one page"), **_errors(400, 401, 403, 429)},
            }
        },
        "/api/uploads/{upload_id}": {
            "parameters": [UPLOAD_ID],
            "get": {
                "summary": "One of the caller's uploads",
                "parameters": [AUTHORIZATION],
                "responses": {"200": _json(_ITEM, "the upload"), **_errors(*COMMON)},
            },
        },
    }


def _metrics(settings: Settings) -> dict[str, Any]:
    if not settings.metrics:
        return {}
    text = {"description": "Prometheus text exposition",
            "content": {"text/plain": {"schema": {"type": "string"}}}}  # fmt: skip
    return {
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "parameters": [AUTHORIZATION],
                "responses": {"200": text, **_errors(401)},
            }
        }
    }
