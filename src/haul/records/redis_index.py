"""A Redis index of stored content by (owner, SHA-256, length), in front of any MetadataStore:
instant-upload lookups become one key read instead of a database query. The records stay the
truth: every hit is checked against them, and a miss falls back to the store's own query."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from haul.core.interfaces import MetadataStore
from haul.core.models import Upload, UploadState


class RedisDigestIndex:
    def __init__(self, store: MetadataStore, url: str, *, prefix: str = "haul:digest:") -> None:
        self.store = store
        self.redis = Redis.from_url(url)
        self.prefix = prefix

    def __getattr__(self, name: str) -> Any:  # every other MetadataStore call goes through
        return getattr(self.store, name)

    def _key(self, sha256: str, length: int, owner: str | None) -> str:
        scope = "*" if owner is None else owner
        return f"{self.prefix}{scope}:{sha256}:{length}"

    async def close(self) -> None:
        await self.store.close()
        await self.redis.aclose()

    async def save(self, upload: Upload) -> None:
        await self.store.save(upload)
        if upload.sha256 is None or upload.length is None:
            return
        keys = [self._key(upload.sha256, upload.length, o) for o in (upload.owner, None)]
        if upload.state is UploadState.COMPLETE:
            await self.redis.mset(dict.fromkeys(keys, upload.id))
        elif upload.state.gone:
            for key in keys:  # only if it still names this upload
                await self.redis.eval(_DELETE_IF, 1, key, upload.id)

    async def find_complete(self, sha256: str, length: int, owner: str | None) -> Upload | None:
        cached = await self.redis.get(self._key(sha256, length, owner))
        if cached is not None:
            upload_id = cached.decode() if isinstance(cached, bytes) else str(cached)
            upload = await self.store.get(upload_id)
            if (
                upload is not None
                and upload.complete
                and upload.sha256 == sha256
                and upload.length == length
                and (owner is None or upload.owner == owner)
            ):
                return upload
        return await self.store.find_complete(sha256, length, owner)


_DELETE_IF = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end"
