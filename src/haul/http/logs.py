"""Logs a machine can read: every line of a request carries that request's id (the client's
X-Request-Id when it sent a sane one, returned in the answer either way), and, once known, the
upload id and the owner. ``--log-format json`` writes one JSON object a line; ``--access-log``
adds one line per request with its status, the error code of a refusal, bytes received and
sent, and duration.
Credentials never reach a log: only the owner's name does."""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from contextvars import ContextVar
from datetime import UTC, datetime

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_FIELDS = ("request_id", "upload_id", "owner")
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# One mutable record per request: handlers deep inside the app fill it in, and the middleware
# that set it reads it back when the answer is done.
_current: ContextVar[dict[str, object] | None] = ContextVar("haul_request", default=None)
access = logging.getLogger("haul.access")


def tag(**values: str) -> None:
    """Name what the current request is about (upload_id=..., owner=...) for its log lines."""
    record = _current.get()
    if record is not None:
        record.update({k: v for k, v in values.items() if v})


class RequestContext:
    """Gives every request its id and, with ``access_log``, one log line when it is done."""

    def __init__(self, app: ASGIApp, access_log: bool = False) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _SANE_ID.fullmatch(given) else secrets.token_hex(8)
        record: dict[str, object] = {"request_id": request_id}
        token = _current.set(record)
        started = time.perf_counter()
        status, sent, received = 500, 0, 0

        async def answer(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        async def counting() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        try:
            await self.app(scope, counting if self.access_log else receive, answer)
        finally:
            if self.access_log:
                code = record.get("error_code", "")
                access.info(
                    "%s %s %d%s",
                    scope["method"],
                    scope["path"],
                    status,
                    f" {code}" if code else "",
                    extra={
                        "status": status,
                        "error_code": code or None,
                        "bytes_received": received,
                        "bytes_sent": sent,
                        "duration": round(time.perf_counter() - started, 6),
                    },
                )
            _current.reset(token)


class ContextFilter(logging.Filter):
    """Copies the current request's fields onto every log record made while it runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = _current.get() or {}
        for name in _FIELDS:
            if not hasattr(record, name) and name in current:
                setattr(record, name, current[name])
        return True


class JsonFormatter(logging.Formatter):
    EXTRA = (*_FIELDS, "status", "error_code", "bytes_received", "bytes_sent", "duration")

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({k: v for k in self.EXTRA if (v := getattr(record, k, None)) is not None})
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(level: str, log_format: str) -> None:
    """The process's logging: text or JSON lines on stderr, request fields on every line."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):  # uvicorn's own lines go the same way
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
