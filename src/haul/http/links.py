"""Download links that carry their own short-lived authorisation, for places that cannot send
an Authorization header (a browser's <a href>, a media player, curl in a script)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from urllib.parse import urlencode


class LinkSigner:
    def __init__(self, secret: str, ttl: float) -> None:
        # Without a configured secret, links are valid on this process only, until it restarts.
        self.key = secret.encode() if secret else secrets.token_bytes(32)
        self.ttl = ttl

    def _mac(self, upload_id: str, owner: str, expires: int) -> str:
        message = f"{upload_id}\n{owner}\n{expires}".encode()
        digest = hmac.new(self.key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def query(self, upload_id: str, owner: str, now: float | None = None) -> str:
        expires = int((now or time.time()) + self.ttl)
        return urlencode({"expires": expires, "signature": self._mac(upload_id, owner, expires)})

    def valid(self, upload_id: str, owner: str, expires: str, signature: str) -> bool:
        if not expires.isdigit() or int(expires) < time.time():
            return False
        return hmac.compare_digest(self._mac(upload_id, owner, int(expires)), signature)
