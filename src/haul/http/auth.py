"""Who is asking: API keys and JSON Web Tokens (``Authorization: Bearer ...``), each mapped to
the owner whose uploads a request may see and touch, with that owner's quota."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jwt

from haul.config import Settings
from haul.core.models import Quota
from haul.errors import ConfigError, Unauthorized
from haul.http.guard import TokenBuckets

log = logging.getLogger("haul")

ANONYMOUS = ""
_OWNER = re.compile(r"[^\x00-\x1f\x7f]{1,200}")
# Per-token overrides of the server's quota, in a "haul" claim: {"haul": {"quota_bytes": ...}}.
_QUOTA_CLAIMS = {
    "max_size": "max_size",
    "quota_bytes": "max_bytes",
    "quota_active_uploads": "max_active",
    "quota_uploads_per_hour": "per_hour",
}


@dataclass(frozen=True)
class Principal:
    owner: str  # "" = anonymous
    quota: Quota


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _parse_keys(entries: tuple[str, ...]) -> list[tuple[bytes, str]]:
    keys = []
    for entry in entries:
        owner, sep, key = entry.partition(":")
        if not sep or not owner.strip() or len(key.strip()) < 16:
            raise ConfigError("each API key is owner:key, with a key of at least 16 characters")
        keys.append((_digest(key.strip()), owner.strip()))
    return keys


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self.quota = Quota(
            max_bytes=settings.quota_bytes,
            max_active=settings.quota_active_uploads,
            per_hour=settings.quota_uploads_per_hour,
        )
        self.keys = _parse_keys(settings.api_keys)
        self.jwt_keys: list[tuple[str, Any]] = []
        if settings.jwt_secret:
            if len(settings.jwt_secret) < 32:
                raise ConfigError("jwt_secret must be at least 32 characters")
            self.jwt_keys.append(("HS256", settings.jwt_secret))
        if settings.jwt_public_key:
            try:
                pem = Path(settings.jwt_public_key).read_bytes()
            except OSError as exc:
                raise ConfigError(f"cannot read jwt_public_key: {exc}") from None
            self.jwt_keys.append(("RS256", pem))
        self.issuer = settings.jwt_issuer or None
        self.audience = settings.jwt_audience or None
        self.owner_claim = settings.jwt_owner_claim
        self.required = not settings.anonymous_allowed
        # One instance serves every endpoint of a node, so an owner's requests all count here.
        self.owner_rates = (
            TokenBuckets(settings.rate_limit, settings.rate_burst) if settings.rate_limit else None
        )

    def authenticate(self, authorization: str | None) -> Principal:
        """Who is asking (Unauthorized if nobody acceptable); spends one of the owner's rate
        tokens (RateLimited when none is left; counted per node)."""
        principal = self._identify(authorization)
        if self.owner_rates is not None and principal.owner:
            self.owner_rates.take(f"owner:{principal.owner}")
        return principal

    def _identify(self, authorization: str | None) -> Principal:
        if not authorization:
            if self.required:
                raise Unauthorized(
                    "this server needs credentials: send Authorization: Bearer <API key or token>"
                )
            return Principal(ANONYMOUS, self.quota)
        scheme, _, credential = authorization.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise Unauthorized("send credentials as Authorization: Bearer <API key or token>")
        owner = self._owner_of_key(credential)
        if owner is not None:
            return Principal(owner, self.quota)
        if self.jwt_keys and credential.count(".") == 2:
            return self._from_token(credential)
        raise Unauthorized("the API key or token is not valid")

    def _owner_of_key(self, credential: str) -> str | None:
        given = _digest(credential)
        found = None
        for digest, owner in self.keys:  # compare with every key: timing tells nothing
            if hmac.compare_digest(digest, given):
                found = owner
        return found

    def _from_token(self, token: str) -> Principal:
        reason = "the token is not valid"
        for algorithm, key in self.jwt_keys:
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=[algorithm],
                    issuer=self.issuer,
                    audience=self.audience,
                    leeway=30,
                    options={"require": ["exp"], "verify_aud": self.audience is not None},
                )
            except jwt.ExpiredSignatureError:
                raise Unauthorized("the token has expired") from None
            except jwt.InvalidTokenError as exc:
                reason = f"the token is refused: {exc}"
                continue
            return Principal(self._owner(claims), self._quota(claims))
        raise Unauthorized(reason)

    def _owner(self, claims: dict[str, Any]) -> str:
        owner = claims.get(self.owner_claim)
        if not isinstance(owner, str | int) or not _OWNER.fullmatch(str(owner)):
            raise Unauthorized(f"the token has no usable {self.owner_claim!r} claim")
        return str(owner)

    def _quota(self, claims: dict[str, Any]) -> Quota:
        given = claims.get("haul")
        if not isinstance(given, dict):
            return self.quota
        changes = {}
        for claim, name in _QUOTA_CLAIMS.items():
            value = given.get(claim)
            if value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise Unauthorized(f"the token's haul.{claim} claim must be a whole number >= 0")
            changes[name] = value
        return replace(self.quota, **changes)
