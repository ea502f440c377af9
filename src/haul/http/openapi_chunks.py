"""The chunk APIs in the OpenAPI document: the design note's (/upload-chunk, /exist, /merge)
and flow.js / Resumable.js (/flow)."""

from __future__ import annotations

from typing import Any

from haul.config import Settings

_HEX = "^([0-9a-fA-F]{32}|[0-9a-fA-F]{64})$"
_FILE_HASH = {"type": "string", "pattern": _HEX, "description": "MD5 (SparkMD5) or SHA-256 hex"}
_MD5 = {"type": "string", "pattern": "^[0-9a-fA-F]{32}$"}
_INDEX = {"type": "integer", "minimum": 0, "maximum": 99_999}
_COUNT = {"type": "integer", "minimum": 1, "maximum": 100_000}
_NAME = {"type": "string", "minLength": 1, "maxLength": 1024}
_AUTH = {
    "name": "Authorization",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "`Bearer <API key or JWT>` when required.",
}
_TEXT_ERROR = {
    "description": "`CODE: message`",
    "content": {"text/plain": {"schema": {"type": "string"}}},
}
_URL = {"type": "string"}


def _json(description: str, **properties: dict[str, Any]) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "required": list(properties)}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): _TEXT_ERROR for code in codes}


_REFUSALS = (400, 401, 403, 408, 410, 413, 415, 422, 423, 429)


def _flow_parameters() -> list[dict[str, Any]]:
    def query(name: str, schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
        return {"name": f"flow{name}", "in": "query", "required": required, "schema": schema}

    size = {"type": "integer", "minimum": 1, "maximum": 2**40}
    return [
        query("ChunkNumber", _COUNT),
        query("ChunkSize", size),
        query("CurrentChunkSize", {"type": "integer", "minimum": 0, "maximum": 2**40}),
        query("TotalSize", {"type": "integer", "minimum": 0, "maximum": 2**40}),
        query("Identifier", {"type": "string", "minLength": 1, "maxLength": 512}),
        query("TotalChunks", _COUNT),
        query("Filename", {"type": "string"}, required=False),
        query("RelativePath", {"type": "string"}, required=False),
    ]


def chunk_paths(settings: Settings) -> dict[str, Any]:
    if not settings.chunk_api:
        return {}
    prefix = settings.chunk_api_prefix
    form = {
        "type": "object",
        "properties": {
            "index": _INDEX,
            "fileHash": _FILE_HASH,
            "chunkHash": _MD5,
            "totalChunks": _COUNT,
            "fileName": {"type": "string"},
            "chunk": {"type": "string", "format": "binary"},
        },
        "required": ["index", "fileHash", "chunk"],
    }
    merge = {
        "type": "object",
        "properties": {"fileHash": _FILE_HASH, "fileName": _NAME, "totalChunks": _COUNT},
        "required": ["fileHash", "fileName"],
    }
    missing = _json("chunks are missing", error={"type": "string"}, missing={"type": "array"})
    flow_answer = {
        "description": "the chunk is stored; the last one answers with the assembled upload",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
    return {
        prefix + "/upload-chunk": {
            "post": {
                "summary": "Store one chunk (the design note's API; the form is read as a stream)",
                "parameters": [_AUTH],
                "requestBody": {
                    "required": True,
                    "content": {"multipart/form-data": {"schema": form}},
                },
                "responses": {
                    "200": _json("the chunk is held", index=_INDEX, size={"type": "integer"}),
                    **_errors(*_REFUSALS, 409),
                },
            }
        },
        prefix + "/exist": {
            "get": {
                "summary": "Whether the caller holds the file already, else which chunks",
                "parameters": [
                    _AUTH,
                    {"name": "fileHash", "in": "query", "required": True, "schema": _FILE_HASH},
                ],
                "responses": {
                    "200": _json(
                        "what is held",
                        exists={"type": "boolean"},
                        url={"type": ["string", "null"]},
                        uploadedChunks={"type": "array", "items": {"type": "integer"}},
                    ),
                    **_errors(400, 401, 403, 429),
                },
            }
        },
        prefix + "/merge": {
            "post": {
                "summary": "Join the chunks in index order into one upload, checked against "
                "fileHash (MD5 for 32 hex digits, SHA-256 for 64)",
                "parameters": [_AUTH],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": merge}},
                },
                "responses": {
                    "200": _json(
                        "the upload",
                        url=_URL,
                        size={"type": "integer"},
                        sha256={"type": ["string", "null"]},
                    ),
                    "409": missing,
                    **_errors(*_REFUSALS),
                },
            }
        },
        prefix + "/flow": {
            "get": {
                "summary": "flow.js / Resumable.js test: 200 when the chunk (or the file) is "
                "held, 204 when not (resumable* parameters work the same)",
                "parameters": [_AUTH, *_flow_parameters()],
                "responses": {
                    "200": {"description": "held"},
                    "204": {"description": "not held: send it"},
                    **_errors(400, 401, 403, 429),
                },
            },
            "post": {
                "summary": "flow.js / Resumable.js chunk: multipart (file part `file`) or, as "
                'here, method "octet" (parameters in the query, the raw chunk as body)',
                "parameters": [_AUTH, *_flow_parameters()],
                "requestBody": {
                    "required": True,
                    "content": {"application/octet-stream": {"schema": {"format": "binary"}}},
                },
                "responses": {"200": flow_answer, **_errors(*_REFUSALS, 409)},
            },
        },
    }
