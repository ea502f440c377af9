"""Part sizes of a multipart upload.

Growing (the default): part n holds ``base * 2 ** ((n - 1) // 1000)`` bytes, so 10,000 parts
reach S3's 5 TiB object limit whatever the length. Equal (Cloudflare R2 refuses a multipart
upload whose parts but the last differ in size): one size for every part, chosen when the
upload is created and kept in its state, large enough that 10,000 parts hold its length when
that is known, else ``base`` (a deferred-length upload then holds at most 10,000 x base).
Parts are always cut at exactly these sizes, so part n of an upload covers the same bytes
whichever request sends it.
"""

from __future__ import annotations

from collections.abc import Callable

# S3's limits, the same on every implementation: the one place that says them.
MiB = 1 << 20
MIN_PART = 5 * MiB  # the smallest part but the last
MAX_PART = 5 * 1024 * MiB  # the largest part (and single copy)
MAX_PARTS = 10_000


def growing_size(base: int, number: int) -> int:
    return int(base * 2 ** ((number - 1) // 1000))


def equal_size(base: int, length: int | None) -> int:
    """The one part size of an upload of ``length`` bytes (None: not known yet)."""
    if not length:
        return base
    needed = -(-length // MAX_PARTS)
    return min(MAX_PART, max(base, -(-needed // MiB) * MiB))  # whole MiB, for round numbers


PartSize = Callable[[int], int]  # part number -> its size
