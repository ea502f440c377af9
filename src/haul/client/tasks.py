"""Work that runs side by side and fails as one: the first failure cancels the rest, which are
waited for before it is raised, so nothing of an upload still runs (or reads a closed file)
once its caller hears of the failure."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


async def all_or_none(*work: Coroutine[Any, Any, None]) -> None:
    tasks = [asyncio.ensure_future(item) for item in work]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
