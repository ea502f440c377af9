"""A newer request on an upload stops the one still writing it, but only while that one waits
on the storage: real asyncio tasks, the core's own registry (no HTTP). And a store that cannot
be reached is the client's 503, not an internal error."""

from __future__ import annotations

import asyncio

import pytest

from haul.core.takeover import STUCK_AFTER, Takeovers
from haul.errors import StoreUnavailable, TakenOver

pytestmark = pytest.mark.fast
ID = "0" * 32
OWNER = "alice"


async def _writer(takeovers: Takeovers, on_storage: bool, entered: asyncio.Event) -> str:
    async with takeovers.writing(ID, OWNER) as phase:
        if not on_storage:
            phase.waiting_on_storage(False)
        entered.set()
        await asyncio.sleep(3600)  # a store that never answers, or a client that sends nothing
    return "finished"


async def _run(on_storage: bool, asker: str = OWNER) -> tuple[asyncio.Task[str], Takeovers]:
    takeovers = Takeovers()
    entered = asyncio.Event()
    task = asyncio.create_task(_writer(takeovers, on_storage, entered))
    await entered.wait()
    takeovers.ask_to_stop(ID, asker)
    await asyncio.wait([task], timeout=3 * STUCK_AFTER)  # stuck only once the wait lasts
    return task, takeovers


def test_a_writer_stuck_on_the_storage_is_taken_over() -> None:
    async def scenario() -> None:
        task, takeovers = await _run(on_storage=True)
        assert task.done()
        with pytest.raises(TakenOver):
            task.result()
        assert task.cancelling() == 0  # the stop is consumed, not left pending
        takeovers.ask_to_stop(ID, OWNER)  # nobody is writing any more: nothing happens

    asyncio.run(scenario())


def test_another_owners_request_stops_no_writer() -> None:
    async def scenario() -> None:
        task, _ = await _run(on_storage=True, asker="mallory")  # refused with 404 later on
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())


def test_a_writer_waiting_for_its_client_keeps_the_upload() -> None:
    async def scenario() -> None:
        task, _ = await _run(on_storage=False)
        assert not task.done()
        task.cancel()  # a cancellation from elsewhere stays a cancellation
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())


def test_a_writer_past_its_body_phase_is_not_stopped() -> None:
    async def scenario() -> None:
        takeovers = Takeovers()
        ended = asyncio.Event()

        async def writer() -> str:
            async with takeovers.writing(ID, OWNER) as phase:
                phase.end()  # committing: runs to its end
                ended.set()
                await asyncio.sleep(0.1)
            return "committed"

        task = asyncio.create_task(writer())
        await ended.wait()
        takeovers.ask_to_stop(ID, OWNER)
        assert await task == "committed"

    asyncio.run(scenario())


def test_an_unreachable_store_is_503_not_an_internal_error() -> None:
    from haul.storage.s3 import S3Storage
    from tests.helpers import free_port

    async def scenario() -> None:
        storage = S3Storage(bucket="b", endpoint=f"http://127.0.0.1:{free_port()}",
                            region="us-east-1", access_key="k", secret_key="s",
                            timeout=2, retries=0)  # fmt: skip
        try:
            with pytest.raises(StoreUnavailable) as caught:
                await storage.offset("0" * 32)
            assert caught.value.status == 503
            assert caught.value.headers["Retry-After"]
        finally:
            await storage.close()

    asyncio.run(scenario())
