"""The blocking hooks: pre-create, pre-finish and pre-terminate asked synchronously, in the
request, before the core takes the step. A 2xx answer allows; its JSON may refuse (``reject``),
replace the metadata (pre-create) or add ``Haul-*`` headers to the answer (pre-finish). A hook
that cannot be asked fails closed: the step is not taken and the client hears 503."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable

from haul.core.gate import Decision, HookFailed, HookRejected, RequestInfo, Step, current_request
from haul.core.models import Upload
from haul.errors import HaulError
from haul.hooks.body import event_body, new_event_id
from haul.hooks.transports import Transport
from haul.wire.tus import encode_metadata, parse_metadata

log = logging.getLogger("haul.hooks")

_HEADER_NAME = re.compile(r"Haul-[A-Za-z0-9-]{1,64}", re.IGNORECASE)
_HEADER_VALUE = re.compile(r"[\x20-\x7e]{0,1024}")
_NO_REQUEST = RequestInfo(method="", path="", client="", headers={})

Observe = Callable[[str, str], None]  # (event type, outcome)


def _ignore(kind: str, outcome: str) -> None:
    return None


def _decision(body: bytes) -> dict[str, object]:
    """The JSON object a hook answered; any other 2xx body (empty, "ok") just allows."""
    try:
        decided = json.loads(body) if body.strip() else {}
    except ValueError:
        return {}
    return decided if isinstance(decided, dict) else {}


class HookGate:
    def __init__(
        self,
        transport: Transport,
        *,
        types: frozenset[str],
        base_url: str,
        base_path: str,
        observe: Observe = _ignore,
    ) -> None:
        self.transport = transport
        self.types = types
        self.base_url = base_url
        self.base_path = base_path
        self.observe = observe

    async def allow(self, step: Step, upload: Upload) -> Decision | None:
        if step not in self.types:
            return None
        request = current_request.get() or _NO_REQUEST
        base = self.base_url or request.base_url or self.base_path
        event_id = new_event_id()
        body = event_body(event_id, step, time.time(), upload, base, request)
        answer = await self.transport.send(event_id, body)
        if not answer.ok:
            self.observe(step, "failed")
            log.warning("%s hook for upload %s failed: %s", step, upload.id, answer.detail)
            raise HookFailed(f"the {step} hook could not decide ({answer.detail}); try again")
        try:
            replaced = self._apply(step, _decision(answer.body), request)
        except HaulError as refused:
            self.observe(step, "rejected" if isinstance(refused, HookRejected) else "failed")
            raise
        self.observe(step, "allowed")
        return replaced

    def _apply(
        self, step: Step, decision: dict[str, object], request: RequestInfo
    ) -> Decision | None:
        reject = decision.get("reject")
        if isinstance(reject, dict):
            status = reject.get("status")
            valid = isinstance(status, int) and 400 <= status < 500
            message = str(reject.get("message") or f"refused by the {step} hook")
            raise HookRejected(status if valid and isinstance(status, int) else 403, message)
        if step == "pre-finish":
            request.answer_headers.update(self._headers(decision.get("headers")))
        if step != "pre-create":
            return None
        raw = None
        metadata = decision.get("metadata")
        if isinstance(metadata, dict):
            raw = encode_metadata({str(k): str(v).encode() for k, v in metadata.items()})
            try:
                parse_metadata(raw)
            except HaulError as invalid:
                raise HookFailed(f"the pre-create hook answered bad metadata: {invalid}") from None
        key = decision.get("storage_key")
        if key is not None and not isinstance(key, str):
            raise HookFailed("the pre-create hook answered a storage_key that is no string")
        return Decision(metadata_raw=raw, storage_key=key) if raw or key else None

    @staticmethod
    def _headers(given: object) -> dict[str, str]:
        """Only ``Haul-*`` names with printable values: a hook cannot set cookies or CORS."""
        if not isinstance(given, dict):
            return {}
        kept = {
            str(name): str(value)
            for name, value in given.items()
            if _HEADER_NAME.fullmatch(str(name)) and _HEADER_VALUE.fullmatch(str(value))
        }
        if len(kept) != len(given):
            log.warning("pre-finish hook headers not named Haul-* (or not printable) left out")
        return kept
