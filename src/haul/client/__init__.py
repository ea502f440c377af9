"""The haul client library: resumable, parallel, verified uploads to any tus 1.0.0 server."""

from haul.client.api import AsyncClient, Client, UploadStatus
from haul.client.errors import (
    HaulClientError,
    NotSupported,
    RetriesExhausted,
    ServerRejected,
    UploadGone,
)
from haul.client.upload import Progress, UploadResult

__all__ = [
    "AsyncClient",
    "Client",
    "HaulClientError",
    "NotSupported",
    "Progress",
    "RetriesExhausted",
    "ServerRejected",
    "UploadGone",
    "UploadResult",
    "UploadStatus",
]
