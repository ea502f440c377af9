"""How haul's S3 client behaves on the network, chosen for uploads.

A part upload of 8-64 MiB on a slow link may take minutes yet make steady progress; a frozen
store makes none. So no call has a deadline for its whole duration: each phase has a limit on
*silence* instead. Connecting may take ``CONNECT_TIMEOUT`` (a store that does not accept a
connection in that long is down, not slow). Sending a body is bounded by TCP_USER_TIMEOUT (the
kernel gives up on a connection whose sent bytes stay unacknowledged that long, a zero window
included, which is what a frozen store shows), where the platform has it; waiting for the
answer by the read timeout. Either way the call is abandoned and tried again, up to
``retries`` more times, by botocore's standard mode (exponential backoff with jitter, on
timeouts, dropped connections, throttling and 5xx). Requests with a body go without
``Expect: 100-continue`` (botocore adds it to every part): the wait for "100 Continue" has no
timeout at all in aiohttp, so a store frozen before answering it would hold the call forever,
and a part is small enough to send at once even to a store that refuses it. A store still
unreachable after the retries is the client's 503 ERR_STORE_UNAVAILABLE, with Retry-After,
not an internal error.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import io
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiobotocore.config import AioConfig
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import BytesPayload
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as StoreConnectionError

from haul.core.interfaces import StoredBytesMissing
from haul.errors import StoreUnavailable
from haul.storage.s3_signing import choose_signer

CONNECT_TIMEOUT = 10.0
# What the stores answer for an object or multipart upload that is not there (AWS, MinIO and
# Ceph RGW differ: a HEAD carries no body, so only the status is left as its code).
_MISSING = frozenset({"NoSuchKey", "NoSuchUpload", "NotFound", "404"})


def client_config(*, addressing: str, timeout: float, retries: int, tls: bool) -> AioConfig:
    return AioConfig(
        signature_version="s3v4",  # presigned URLs too: v2 is gone from most stores
        s3={"addressing_style": addressing},
        # One integrity check a part, not two: over plain HTTP botocore signs every body's
        # SHA-256, which the store checks, so its CRC32 would only cost time on the event loop;
        # over TLS the CRC32 is what lets it send the body unsigned.
        request_checksum_calculation="when_supported" if tls else "when_required",
        connect_timeout=min(CONNECT_TIMEOUT, timeout),
        read_timeout=timeout,
        retries={"total_max_attempts": retries + 1, "mode": "standard"},
        connector_args={"socket_factory": functools.partial(_socket, timeout)},
    )


def _socket(unacknowledged: float, addr_info: Any) -> socket.socket:
    family, kind, proto, _, _ = addr_info
    sock = socket.socket(family=family, type=kind, proto=proto)
    option = getattr(socket, "TCP_USER_TIMEOUT", None)  # Linux only
    if option is not None and family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, option, max(1, int(unacknowledged * 1000)))
    return sock


class ReportingClient:
    """The aiobotocore client, its calls unchanged but for a store that cannot be reached
    (connection refused or dropped, timeouts), reported as StoreUnavailable. The store's own
    answers (ClientError) pass as they are: callers read their codes."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        inner.meta.events.register("before-send.s3", _before_send)
        inner.meta.events.register("choose-signer.s3.UploadPart", choose_signer)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        return _reporting(attr) if callable(attr) else attr


def _before_send(request: Any, **_: Any) -> None:
    # (Never signed: botocore leaves Expect out of the signature.)
    if "Expect" in request.headers:
        del request.headers["Expect"]
    if isinstance(request.body, bytearray):  # a part
        request.body = PartBody(memoryview(request.body))


class PartBody(BytesPayload):
    """A part's body as aiohttp should send it: uncopied. aiohttp slices a body to its length
    (a copy, for a bytearray: not for a view of it), and on Pythons before 3.12.9 joins the
    request's headers and the first piece of its body into one buffer before writing them: a
    copy of the whole part when the body goes as one piece. Both profiled at a tenth of the
    event loop's time, and as 8 MiB allocations a part. So the body goes as a view, in two
    pieces: the first small enough that joining it costs nothing."""

    FIRST = 64 * 1024

    def seek(self, offset: int, whence: int = 0) -> int:
        """botocore rewinds a body before it tries again: this one is always sent whole."""
        if offset or whence:
            raise io.UnsupportedOperation("a part's body is only ever sent from its start")
        return 0

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        view = memoryview(self._value)
        if content_length is not None:
            view = view[:content_length]
        await writer.write(view[: self.FIRST])
        if len(view) > self.FIRST:
            await writer.write(view[self.FIRST :])


def _reporting(call: Callable[..., Any]) -> Callable[..., Any]:
    # The client's methods return coroutines (they are not coroutine functions themselves);
    # anything else they return (a paginator) passes as it is.
    @functools.wraps(call)
    def reported(*args: Any, **kwargs: Any) -> Any:
        result = call(*args, **kwargs)
        return _awaited(result) if inspect.isawaitable(result) else result

    return reported


async def _awaited(result: Awaitable[Any]) -> Any:
    try:
        return await result
    except (HTTPClientError, StoreConnectionError) as exc:
        raise StoreUnavailable(
            f"the object store did not answer ({type(exc).__name__})",
            headers={"Retry-After": "5"},
        ) from exc


def is_missing(error: ClientError) -> bool:
    """The one place that reads the store's error codes."""
    return str(error.response.get("Error", {}).get("Code", "")) in _MISSING


@contextlib.contextmanager
def missing_as_contract(what: str) -> Iterator[None]:
    """A missing object or multipart upload becomes the storage contract's error."""
    try:
        yield
    except ClientError as exc:
        if is_missing(exc):
            raise StoredBytesMissing(f"{what} is not in the store") from None
        raise
