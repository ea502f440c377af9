"""haul: resumable, parallel, verified uploads of very large files over tus 1.0.0."""

from haul.client import (
    AsyncClient,
    Client,
    HaulClientError,
    Progress,
    ServerRejected,
    UploadResult,
    UploadStatus,
)

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "Client",
    "HaulClientError",
    "Progress",
    "ServerRejected",
    "UploadResult",
    "UploadStatus",
    "__version__",
]
