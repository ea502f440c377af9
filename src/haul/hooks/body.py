"""The JSON an event is told as: the same body for every delivery of one event, so receivers
can check its signature and drop a repeat by its id."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime

from haul.core import events
from haul.core.gate import RequestInfo
from haul.core.models import ConcatKind, Upload

POST_TYPES: dict[type[events.Event], str] = {
    events.Created: "post-create",
    events.Progress: "post-receive",
    events.Finished: "post-finish",
    events.Terminated: "post-terminate",
    events.Expired: "post-expire",
}
BLOCKING_TYPES = ("pre-create", "pre-finish", "pre-terminate")
EVENT_TYPES = (*BLOCKING_TYPES, *POST_TYPES.values())


def new_event_id() -> str:
    return secrets.token_hex(16)


def rfc3339(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def upload_view(upload: Upload, base_url: str) -> dict[str, object]:
    return {
        "id": upload.id,
        "url": f"{base_url}{upload.id}",
        "length": upload.length,
        "offset": upload.offset,
        "metadata": {k: v.decode("utf-8", "replace") for k, v in upload.metadata.items()},
        "storage_key": upload.storage_key,
        "owner": upload.owner,
        "sha256": upload.sha256,
        "complete": upload.complete,
        "partial": upload.concat is ConcatKind.PARTIAL,
        "final": upload.concat is ConcatKind.FINAL,
    }


def request_view(request: RequestInfo) -> dict[str, object]:
    return {
        "method": request.method,
        "path": request.path,
        "client": request.client,
        "headers": dict(request.headers),
    }


def event_body(
    event_id: str,
    kind: str,
    at: float,
    upload: Upload,
    base_url: str,
    request: RequestInfo | None = None,
) -> bytes:
    """The event as sent: ``request`` only for the blocking hooks, which decide on it."""
    body: dict[str, object] = {
        "id": event_id,
        "type": kind,
        "time": rfc3339(at),
        "upload": upload_view(upload, base_url),
    }
    if request is not None:
        body["request"] = request_view(request)
    return json.dumps(body, separators=(",", ":")).encode()
