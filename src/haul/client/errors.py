"""What can go wrong on the client side, as a small hierarchy: every failure a public method
reports is a :class:`HaulClientError`, with the server's own words when it gave any."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx


class HaulClientError(Exception):
    """Base of every error the client raises."""


class ServerRejected(HaulClientError):
    """The server refused the request in a way that retrying cannot fix (a 4xx). ``code`` and
    ``message`` are the server's (haul answers ``CODE: message``); ``code`` is empty for a
    server that gives none."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(
            f"{code}: {message} (HTTP {status})" if code else f"HTTP {status}: {message}"
        )
        self.status = status
        self.code = code
        self.message = message


class UploadGone(ServerRejected):
    """The upload no longer exists on the server (404 or 410: expired or terminated)."""


class RetriesExhausted(HaulClientError):
    """A request kept failing with network errors or 5xx until the retry budget ran out."""


class NotSupported(HaulClientError):
    """The server lacks a capability this operation needs."""


@contextmanager
def reported_as_client_errors(what: str) -> Iterator[None]:
    """Around a public method: what escaped the retry policy (an HTTP error that is not worth
    retrying, a file that cannot be read or written) becomes a HaulClientError naming ``what``."""
    try:
        yield
    except HaulClientError:
        raise
    except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
        raise HaulClientError(f"{what}: {type(exc).__name__}: {exc}") from exc
    except OSError as exc:
        raise HaulClientError(f"{what}: {exc}") from exc
