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

import functools
import inspect
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from aiobotocore.config import AioConfig
from botocore.exceptions import ConnectionError as StoreConnectionError
from botocore.exceptions import HTTPClientError

from haul.errors import StoreUnavailable

CONNECT_TIMEOUT = 10.0


def client_config(*, addressing: str, timeout: float, retries: int) -> AioConfig:
    return AioConfig(
        signature_version="s3v4",  # presigned URLs too: v2 is gone from most stores
        s3={"addressing_style": addressing},
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
        inner.meta.events.register("before-send.s3", _without_expect)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        return _reporting(attr) if callable(attr) else attr


def _without_expect(request: Any, **_: Any) -> None:
    # (Never signed: botocore leaves Expect out of the signature.)
    if "Expect" in request.headers:
        del request.headers["Expect"]


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
