"""A client library may swallow a cancel that lands while it reads (redis-py does, now and then):
a loop that checks `raise_if_cancelling` still ends, and `stop_task` never waits for good on a
task that does not."""

from __future__ import annotations

import asyncio
import contextlib

from swarmd.runtime.cancelling import raise_if_cancelling, stop_task


async def _read_that_swallows_a_cancel(entered: asyncio.Event) -> None:
    """What a read that loses its cancel looks like: the CancelledError is caught and dropped."""
    entered.set()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()


async def test_a_loop_that_checks_ends_after_a_swallowed_cancel() -> None:
    entered = asyncio.Event()
    rounds = 0

    async def loop() -> None:
        nonlocal rounds
        while True:
            rounds += 1
            await _read_that_swallows_a_cancel(entered)
            raise_if_cancelling()

    task = asyncio.create_task(loop())
    await entered.wait()
    assert await stop_task(task, timeout=30.0) is True
    assert task.cancelled() and rounds == 1


async def test_a_task_that_never_ends_is_left_behind_not_awaited_for_good() -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def deaf() -> None:  # swallows every cancel, as a loop without the check would
        while not release.is_set():
            await _read_that_swallows_a_cancel(entered)

    task = asyncio.create_task(deaf())
    await entered.wait()
    assert await stop_task(task, timeout=0.05) is False
    assert not task.done()  # left behind, still running
    release.set()
    task.cancel()  # swallowed too, but now the loop sees the flag
    await asyncio.wait({task})
    assert task.done() and not task.cancelled()
