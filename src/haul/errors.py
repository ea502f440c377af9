"""One error hierarchy for the whole server: every error knows its HTTP status and a stable code.

Responses render as ``CODE: message`` in exactly one place (the HTTP layer), so a client can
match on the code while a person reads the message.
"""

from __future__ import annotations

from collections.abc import Mapping


class HaulError(Exception):
    status: int = 500
    code: str = "ERR_INTERNAL"

    def __init__(self, message: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers: dict[str, str] = dict(headers or {})

    def render(self) -> str:
        return f"{self.code}: {self.message}\n"


class BadRequest(HaulError):
    """The request is malformed; retrying it unchanged cannot succeed."""

    status = 400
    code = "ERR_BAD_REQUEST"


class InvalidHeader(BadRequest):
    code = "ERR_INVALID_HEADER"


class InvalidMetadata(BadRequest):
    code = "ERR_INVALID_METADATA"


class InvalidChecksumHeader(BadRequest):
    code = "ERR_INVALID_CHECKSUM_HEADER"


class UnsupportedChecksumAlgorithm(BadRequest):
    code = "ERR_UNSUPPORTED_CHECKSUM_ALGORITHM"


class InvalidConcat(BadRequest):
    code = "ERR_INVALID_CONCAT"


class Unauthorized(HaulError):
    """No credentials, or credentials the server does not accept."""

    status = 401
    code = "ERR_UNAUTHORIZED"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="haul"'})


class QuotaExceeded(HaulError):
    status = 403
    code = "ERR_QUOTA_EXCEEDED"


class RateLimited(HaulError):
    status = 429
    code = "ERR_RATE_LIMITED"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, round(retry_after)))})


class ScanRejected(HaulError):
    status = 422
    code = "ERR_SCAN_REJECTED"


class Forbidden(HaulError):
    status = 403
    code = "ERR_FORBIDDEN"


class ProofRejected(Forbidden):
    code = "ERR_PROOF_REJECTED"


class ModifyFinal(Forbidden):
    code = "ERR_MODIFY_FINAL"


class NotFound(HaulError):
    status = 404
    code = "ERR_UPLOAD_NOT_FOUND"


class MethodNotAllowed(HaulError):
    status = 405
    code = "ERR_METHOD_NOT_ALLOWED"


class OffsetMismatch(HaulError):
    status = 409
    code = "ERR_MISMATCHED_OFFSET"


class UploadIncomplete(HaulError):
    status = 409
    code = "ERR_UPLOAD_NOT_COMPLETE"


class LengthAlreadySet(HaulError):
    status = 409
    code = "ERR_LENGTH_ALREADY_SET"


class Gone(HaulError):
    status = 410
    code = "ERR_UPLOAD_GONE"


class DigestMismatch(HaulError):
    """The completed upload's bytes do not match the digest its client declared."""

    status = 422
    code = "ERR_DIGEST_MISMATCH"


class IdempotencyKeyReused(HaulError):
    """An Idempotency-Key sent again with a request that differs from its first use."""

    status = 422
    code = "ERR_IDEMPOTENCY_KEY_REUSED"


class UploadExists(Exception):
    """A metadata store was asked to insert an id it already holds (a twin request won)."""


class DigestConflict(HaulError):
    status = 409
    code = "ERR_DIGEST_ALREADY_DECLARED"


class LengthRequired(BadRequest):
    code = "ERR_LENGTH_REQUIRED"


class VersionUnsupported(HaulError):
    status = 412
    code = "ERR_UNSUPPORTED_VERSION"


class TooLarge(HaulError):
    status = 413
    code = "ERR_MAX_SIZE_EXCEEDED"


class ExceedsLength(HaulError):
    status = 413
    code = "ERR_SIZE_EXCEEDED"


class UnsupportedMediaType(HaulError):
    status = 415
    code = "ERR_INVALID_CONTENT_TYPE"


class TypeNotAllowed(HaulError):
    """The file's kind (by name, declared type or content) is outside the server's policy."""

    status = 415
    code = "ERR_TYPE_NOT_ALLOWED"


class RangeNotSatisfiable(HaulError):
    status = 416
    code = "ERR_RANGE_NOT_SATISFIABLE"


class Locked(HaulError):
    status = 423
    code = "ERR_UPLOAD_LOCKED"


class TakenOver(Locked):
    code = "ERR_UPLOAD_TAKEN_OVER"


class ChecksumMismatch(HaulError):
    status = 460
    code = "ERR_CHECKSUM_MISMATCH"


class ServiceUnavailable(HaulError):
    status = 503
    code = "ERR_UNAVAILABLE"


class StoreUnavailable(ServiceUnavailable):
    code = "ERR_STORE_UNAVAILABLE"


class TooManyUploads(ServiceUnavailable):
    code = "ERR_TOO_MANY_UPLOADS"


class StorageFull(HaulError):
    status = 507
    code = "ERR_STORAGE_FULL"


class ConfigError(Exception):
    """A setting has a value the server cannot run with (raised at start-up, never per request)."""
