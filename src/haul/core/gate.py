"""The seam for blocking hooks: before an upload is created, finished or terminated, the gate
may refuse the step (raising a HaulError the client hears) or, before creation, replace the
metadata. The default gate allows everything; the core never knows who decides.

Who asked is told through :data:`current_request`, set by the surface that took the request
(plain strings, no HTTP types), so a gate can pass it on and hand headers back to its answer.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Literal, Protocol

from haul.core.models import Upload, storage_key_problem
from haul.errors import HaulError

Step = Literal["pre-create", "pre-finish", "pre-terminate"]


@dataclass
class RequestInfo:
    method: str
    path: str
    client: str  # the client's address
    headers: dict[str, str]  # a selection the surface deems safe to show: never credentials
    base_url: str = ""  # where this server's uploads live, as the client addressed it
    # Headers a gate adds to this request's answer (e.g. a pre-finish hook's result).
    answer_headers: dict[str, str] = field(default_factory=dict)


current_request: ContextVar[RequestInfo | None] = ContextVar("haul_gate_request", default=None)


@dataclass(frozen=True)
class Decision:
    """What a gate decided beyond "allowed" (honoured for pre-create only)."""

    metadata_raw: str | None = None  # a new Upload-Metadata, raw as the header carries it
    storage_key: str | None = None  # where the bytes land below the storage's root


class Gate(Protocol):
    async def allow(self, step: Step, upload: Upload) -> Decision | None:
        """Raise to refuse ``step`` for ``upload`` (a snapshot); return a Decision to change
        what pre-create makes."""
        ...


class OpenGate:
    async def allow(self, step: Step, upload: Upload) -> Decision | None:
        return None


def decide(upload: Upload, decision: Decision | None) -> None:
    """Apply a pre-create decision to the upload about to be made."""
    if decision is None:
        return
    if decision.metadata_raw is not None:
        upload.metadata_raw = decision.metadata_raw
    if decision.storage_key is not None:
        problem = storage_key_problem(decision.storage_key)
        if problem is not None:
            raise HookFailed(f"the pre-create hook chose an unusable storage_key: {problem}")
        upload.storage_key = decision.storage_key


class HookRejected(HaulError):
    """A blocking hook refused the step with a status of its choosing (4xx)."""

    code = "ERR_HOOK_REJECTED"

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class HookFailed(HaulError):
    """A blocking hook could not be asked (down, slow, 5xx): the step is not taken."""

    status = 503
    code = "ERR_HOOK_FAILED"

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})
