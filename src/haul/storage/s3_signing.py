"""Signing a part without hashing it on the event loop.

Over plain HTTP, SigV4 signs the SHA-256 of every request body (the store checks it, which is
what guards a part on its way there). botocore computes it while it signs, on the event loop:
profiled at 15 % of the loop's time while four uploads streamed to S3, on a loop that was the
bottleneck. ``prehashed`` computes the body's digest in a worker thread (hashlib lets go of the
GIL) and hands it to the signer, which signs exactly as before with it: the request on the
wire is the same. botocore picks the signer by the ``choose-signer`` event, for this call only
(the task's context says which body the digest belongs to); anything else, a presigned URL
included, is signed by botocore's own S3 signer.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import Any

import botocore.auth

PREHASHED = "s3v4-prehashed"
# The body being sent by this task's call and its SHA-256 (hex).
_DIGEST: ContextVar[tuple[object, str] | None] = ContextVar("s3_body_digest", default=None)


class PrehashedAuth(botocore.auth.S3SigV4Auth):
    """botocore's S3 SigV4, taking the body's SHA-256 from the caller when it has it."""

    def payload(self, request: Any) -> str:
        known = _DIGEST.get()
        # (botocore's own tests of whether it signs the body; its type stubs do not list them)
        signs = self._should_sha256_sign_payload(request)  # type: ignore[attr-defined]
        streams = self._is_streaming_checksum_payload(request)  # type: ignore[attr-defined]
        if known is not None and known[0] is request.body and signs and not streams:
            return known[1]
        return str(super().payload(request))


botocore.auth.AUTH_TYPE_MAPS[PREHASHED] = PrehashedAuth


def choose_signer(signature_version: str, **_: Any) -> str | None:
    """The ``choose-signer`` handler: ours while a digest is at hand, else botocore's."""
    return PREHASHED if signature_version == "s3v4" and _DIGEST.get() is not None else None


@asynccontextmanager
async def prehashed(body: bytes | bytearray) -> AsyncIterator[None]:
    """Within it, this task's call that sends ``body`` is signed with its digest, computed
    now in a worker thread."""
    digest = await asyncio.to_thread(lambda: hashlib.sha256(body).hexdigest())
    with signed_with(body, digest):
        yield


@contextmanager
def signed_with(body: bytes | bytearray, digest: str) -> Iterator[None]:
    """Within it, this task's call that sends ``body`` signs ``digest`` (hex) as its SHA-256."""
    token = _DIGEST.set((body, digest))
    try:
        yield
    finally:
        _DIGEST.reset(token)
