"""What can go wrong on the client side, as a small hierarchy."""

from __future__ import annotations


class HaulClientError(Exception):
    """Base of every error the client raises."""


class ServerRejected(HaulClientError):
    """The server refused the request in a way that retrying cannot fix (a 4xx)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(
            f"{code}: {message} (HTTP {status})" if code else f"HTTP {status}: {message}"
        )
        self.status = status
        self.code = code
        self.message = message


class RetriesExhausted(HaulClientError):
    """A request kept failing with network errors or 5xx until the retry budget ran out."""


class UploadGone(HaulClientError):
    """The upload no longer exists on the server (expired or terminated)."""


class NotSupported(HaulClientError):
    """The server lacks a capability this operation needs."""
