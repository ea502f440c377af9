"""How much one upload, one owner and the whole server may hold: sizes, quotas, capacity."""

from __future__ import annotations

import time

from haul.core.interfaces import MetadataStore
from haul.core.lifecycle import Limits
from haul.core.models import Quota
from haul.errors import QuotaExceeded, RateLimited, TooLarge, TooManyUploads

NO_QUOTA = Quota()


class Quotas:
    def __init__(self, store: MetadataStore, limits: Limits) -> None:
        self.store = store
        self.limits = limits

    def check_size(self, length: int, quota: Quota = NO_QUOTA) -> None:
        if self.limits.max_size and length > self.limits.max_size:
            raise TooLarge(
                f"upload length {length} exceeds the maximum size {self.limits.max_size}"
            )
        if quota.max_size and length > quota.max_size:
            raise TooLarge(f"upload length {length} exceeds your maximum size {quota.max_size}")

    async def check_owner(
        self, owner: str, quota: Quota, length: int, *, counts_as_file: bool
    ) -> None:
        if not (quota.max_bytes or quota.max_active or quota.per_hour):
            return
        now = time.time()
        usage = await self.store.usage(owner, now)
        if quota.max_bytes and usage.bytes + length > quota.max_bytes:
            raise QuotaExceeded(
                f"this upload of {length} bytes would bring you to {usage.bytes + length} bytes; "
                f"your quota is {quota.max_bytes} (delete uploads to make room)"
            )
        if not counts_as_file:
            return
        if quota.max_active and usage.active >= quota.max_active:
            raise RateLimited(
                f"you have {usage.active} unfinished uploads, the most allowed at once; "
                "finish or delete one first",
                retry_after=30,
            )
        if quota.per_hour and usage.created_last_hour >= quota.per_hour:
            oldest = usage.oldest_last_hour or now
            raise RateLimited(
                f"you created {usage.created_last_hour} uploads in the last hour, the most allowed",
                retry_after=oldest + 3600 - now,
            )

    async def check_capacity(self) -> None:
        cap = self.limits.max_active_uploads
        if cap and await self.store.count_active() >= cap:
            raise TooManyUploads(
                f"the server already holds {cap} unfinished uploads; try again later",
                headers={"Retry-After": "60"},
            )
