"""The uploads API: an application finds its uploads again. Owner-scoped exactly like tus
requests: a caller sees its own uploads only, and another owner's id answers 404.

    GET /api/uploads?state=active|complete&since=T&limit=N&cursor=C
        -> {"uploads": [upload...], "next": C | null}   (oldest first; partials left out)
    GET /api/uploads/{id} -> upload

An upload is {id, url, state, length (null while deferred), offset, metadata (decoded
strings), sha256, created, updated, expires (RFC 3339 or null)}."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Callable
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from haul.core.models import Upload, UploadState
from haul.core.service import UploadService
from haul.errors import BadRequest
from haul.http import logs
from haul.http.auth import Authenticator
from haul.http.routing import ExactRoute

MAX_PAGE = 1000
_STATES = {
    "active": (UploadState.ACTIVE,),
    "complete": (UploadState.COMPLETE,),
    None: (UploadState.ACTIVE, UploadState.COMPLETE),
}


def _time(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="milliseconds")


def _since(text: str | None) -> float | None:
    """RFC 3339 (``2026-12-01T10:00:00Z``) or seconds since the epoch."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"since={text!r} is neither RFC 3339 nor seconds since 1970") from None
    if moment.tzinfo is None:
        raise BadRequest("since needs a time zone (e.g. 2026-12-01T10:00:00Z)")
    return moment.timestamp()


def _encode_cursor(upload: Upload) -> str:
    raw = json.dumps([upload.created_at, upload.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(text: str | None) -> tuple[float, str] | None:
    if not text:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        created, upload_id = json.loads(raw)
        if isinstance(created, bool) or not isinstance(created, int | float):
            raise ValueError(created)
        return float(created), str(upload_id)
    except (binascii.Error, ValueError, TypeError):
        raise BadRequest("cursor is not one this server gave out; start without it") from None


def _limit(text: str | None) -> int:
    if text is None:
        return 100
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        raise BadRequest(f"limit must be a whole number from 1 to {MAX_PAGE}")
    return int(text)


class UploadsApi:
    def __init__(
        self,
        service: UploadService,
        auth: Authenticator,
        locate: Callable[[Request, str], str],
    ) -> None:
        self.service = service
        self.auth = auth
        self.locate = locate

    def routes(self) -> list[BaseRoute]:
        return [
            ExactRoute("/api/uploads", self.listing, methods=["GET"]),
            ExactRoute("/api/uploads/{upload_id}", self.one, methods=["GET"]),
        ]

    def _owner(self, request: Request) -> str:
        owner = self.auth.authenticate(request.headers.get("authorization")).owner
        logs.tag(owner=owner)
        return owner

    def _item(self, request: Request, upload: Upload) -> dict[str, object]:
        return {
            "id": upload.id,
            "url": self.locate(request, upload.id),
            "state": upload.state.value,
            "length": upload.length,
            "offset": upload.offset,
            "metadata": {k: v.decode("utf-8", "replace") for k, v in upload.metadata.items()},
            "sha256": upload.sha256,
            "created": _time(upload.created_at),
            "updated": _time(upload.updated_at),
            "expires": _time(upload.expires_at),
        }

    async def listing(self, request: Request) -> Response:
        owner = self._owner(request)
        query = request.query_params
        state = query.get("state")
        if state not in _STATES:
            raise BadRequest("state must be active or complete")
        limit = _limit(query.get("limit"))
        page = await self.service.store.listing(
            owner,
            states=_STATES[state],
            since=_since(query.get("since")),
            after=_decode_cursor(query.get("cursor")),
            limit=limit + 1,  # one more than asked tells whether there is a next page
        )
        shown = page[:limit]
        await asyncio.gather(*(self._settle_offset(u) for u in shown))
        following = _encode_cursor(shown[-1]) if len(page) > limit else None
        items = [self._item(request, u) for u in shown]
        return JSONResponse({"uploads": items, "next": following})

    async def _settle_offset(self, upload: Upload) -> None:
        if upload.complete:
            upload.offset = upload.length or 0
        elif not upload.is_final:
            upload.offset = await self.service.storage.offset(upload.stored_as)

    async def one(self, request: Request) -> Response:
        owner = self._owner(request)
        upload_id = request.path_params["upload_id"]
        logs.tag(upload_id=upload_id)
        upload = await self.service.status(upload_id, owner=owner)
        return JSONResponse(self._item(request, upload))
