"""Cancelling a job: a cancel stays a cancel through a drain, a retry and a crash, and a
CancelledError out of a handler is a failure like any other, not an endless loop.

In-process worker on a real SQLite file; events, not sleeps, decide when things happen.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from support.worker import LEASE, has_entries, job, ledger, until, worker

from swarmd.queue.base import Disposition, Finish
from swarmd.queue.sqlite.backend import SqliteBackend
from swarmd.registry import AgentPolicy


async def test_a_cancelled_error_from_inside_a_handler_is_a_failure_not_an_endless_loop(tmp_path: Path) -> None:
    runs = 0

    async def stray(ctx: Any, payload: Any) -> None:
        nonlocal runs
        runs += 1
        future = asyncio.get_running_loop().create_future()
        future.cancel()  # a library's future, cancelled by someone else
        await future

    async with worker(tmp_path, {"stray": (stray, AgentPolicy(max_attempts=2))}) as (backend, _):
        await backend.submit([job("stray")])
        await until(lambda: has_entries(backend))
        [entry] = await ledger(backend)
    assert runs == 2  # retried once like any failure, not re-run without end
    assert (entry["outcome"], entry["attempt"], entry["error"]["type"]) == ("dead_lettered", 2, "HandlerCancelled")


async def test_a_swallowed_cancel_does_not_mislabel_the_next_attempt(tmp_path: Path) -> None:
    started = asyncio.Event()

    async def swallow(ctx: Any, payload: Any) -> None:
        if ctx.attempt == 1:
            started.set()
            with contextlib.suppress(asyncio.CancelledError):  # swallows the cancel...
                await asyncio.Event().wait()
            raise RuntimeError("failed after the cancel")  # ...and fails: retried
        await asyncio.Event().wait()  # attempt 2 runs until its timeout

    policy = AgentPolicy(max_attempts=2, timeout=0.2)
    async with worker(tmp_path, {"swallow": (swallow, policy)}) as (backend, w):
        [job_id] = await backend.submit([job("swallow")])
        await started.wait()
        assert w.cancel_job(job_id)
        await until(lambda: has_entries(backend))
        [entry] = await ledger(backend)
        assert w.running.reasons == {}
    # The old code kept attempt 1's reason and recorded attempt 2's timeout as "cancelled".
    assert (entry["outcome"], entry["attempt"], entry["error"]["type"]) == ("dead_lettered", 2, "Timeout")


async def test_drain_keeps_a_requested_cancel_a_cancel(tmp_path: Path) -> None:
    started, cleaning = asyncio.Event(), asyncio.Event()

    async def careful(ctx: Any, payload: Any) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cleaning.set()
            await asyncio.sleep(0.3)  # cleans up past the grace period, then lets the cancel out
            raise

    async with worker(tmp_path, {"careful": (careful, AgentPolicy())}, grace_seconds=0.05) as (backend, w):
        [job_id] = await backend.submit([job("careful")])
        await started.wait()
        assert w.cancel_job(job_id)
        await cleaning.wait()
        w.stop()  # the drain begins while the requested cancel is still being handled
        await until(lambda: has_entries(backend))
        [entry] = await ledger(backend)
    assert entry["outcome"] == "cancelled"  # not released to run again


async def test_a_cancel_requested_while_a_job_ran_survives_its_retry_and_a_crash(tmp_path: Path) -> None:
    backend = SqliteBackend(tmp_path)
    await backend.open()
    try:
        [first, second] = await backend.submit([job(), job()])
        held = {r.job_id: r for r in await backend.reserve(2, lease=LEASE)}
        assert sorted(await backend.cancel(first)) == [first]  # running: flagged
        assert sorted(await backend.cancel(second)) == [second]
        # The first one's attempt ends in a retry; the daemon holding the second one dies.
        await backend.finish([Finish(first, Disposition.RETRY, not_before=0.0, handle=held[first].handle)])
        assert await backend.recover(all_leases=True) == 1
        assert await backend.reserve(5, lease=LEASE) == []  # neither runs again
        outcomes = {e["job_id"]: e["outcome"] for e in await ledger(backend)}
        assert outcomes == {first: "cancelled", second: "cancelled"}
    finally:
        await backend.close()
