"""Every run of a job is tracked to its end: a job handed back while it runs here runs again,
a handler may rename its task, and a drain ends both runs of a job running twice.

In-process worker on a real SQLite file; events, not sleeps, decide when things happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from support.worker import has_entries, job, ledger, until, worker

from swarmd.config import Settings
from swarmd.queue.sqlite.backend import SqliteBackend
from swarmd.registry import AgentPolicy, Registry
from swarmd.runtime.worker import Worker
from swarmd.telemetry.metrics import Metrics
from swarmd.telemetry.tracing import Tracing


async def test_a_job_handed_back_while_it_runs_here_runs_again_and_both_runs_are_tracked(tmp_path: Path) -> None:
    """Job tasks find their reservation by job id: a second reservation of a job still running
    here (its lease expired and came back) runs it again (at least once, as on any daemon), and
    both runs are tracked to their end: one ledger entry, no slot or task left behind."""
    second_started = asyncio.Event()
    release = asyncio.Event()
    runs = 0

    async def long(ctx: Any, payload: Any) -> str:
        nonlocal runs
        runs += 1
        if runs == 2:
            second_started.set()
        await release.wait()
        return "done"

    async with worker(tmp_path, {"long": (long, AgentPolicy())}) as (backend, w):
        [job_id] = await backend.submit([job("long")])
        await until(lambda: _runs(lambda: runs, 1))
        side = sqlite3.connect(tmp_path / "swarmd.db")
        with side:  # as if its lease had expired and been recovered: ready again
            side.execute("UPDATE jobs SET state = 'ready', owner = NULL WHERE id = ?", (job_id,))
        side.close()
        await backend.submit([job()])  # wakes the puller, which reserves it again
        await asyncio.wait_for(second_started.wait(), 10)
        assert w.in_flight == 2 and len(w.running) == 1 and w.running.displaced == 1
        release.set()
        await until(lambda: _count_entries(backend, 2))
        await until(lambda: _runs(lambda: w.in_flight, 0))
        assert len(w.running) == 0 and w.running.displaced == 0
        entries = await ledger(backend)
    assert runs == 2
    assert sorted((e["agent"], e["outcome"]) for e in entries) == [("echo", "succeeded"), ("long", "succeeded")]


async def _runs(value: Any, expected: int) -> bool:
    return bool(value() == expected)


async def _count_entries(backend: SqliteBackend, n: int) -> bool:
    return len(await backend.ledger_entries()) >= n


async def test_a_handler_that_renames_its_task_still_gets_its_outcome_and_frees_its_slot(tmp_path: Path) -> None:
    """Job tasks are named by job id for the done callback; a handler may rename its own task."""
    started = asyncio.Event()
    loop_errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, context: loop_errors.append(context))

    async def renamer(ctx: Any, payload: Any) -> str:
        task = asyncio.current_task()
        assert task is not None
        task.set_name(f"renamed-{payload}")
        if payload == "hang":
            started.set()
            await asyncio.Event().wait()
        return "ok"

    backend = SqliteBackend(tmp_path)
    await backend.open()
    registry = Registry()
    registry.register("renamer", renamer, AgentPolicy())
    w = Worker(
        backend, registry, Settings(poll_interval=0.05), Metrics(CollectorRegistry(), agents=["renamer"]), Tracing(None)
    )
    run = asyncio.get_running_loop().create_task(w.run())
    try:
        await backend.submit([job("renamer", payload="quick")])
        await until(lambda: has_entries(backend))
        [entry] = await ledger(backend)
        assert entry["outcome"] == "succeeded"
        await backend.submit([job("renamer", payload="hang")])
        await asyncio.wait_for(started.wait(), 10)
        run.cancel()  # the group ends without a drain: its job tasks are cancelled with no reason
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(run, 10)
        assert len(w.running) == 0 and w.in_flight == 0
        assert loop_errors == []
    finally:
        if not run.done():
            run.cancel()
        await backend.close()


async def test_a_drain_ends_both_runs_of_a_job_running_twice(tmp_path: Path) -> None:
    runs = 0
    second_started = asyncio.Event()

    async def long(ctx: Any, payload: Any) -> None:
        nonlocal runs
        runs += 1
        if runs == 2:
            second_started.set()
        await asyncio.Event().wait()  # until cancelled

    async with worker(tmp_path, {"long": (long, AgentPolicy())}) as (backend, w):
        [job_id] = await backend.submit([job("long")])
        await until(lambda: _runs(lambda: runs, 1))
        side = sqlite3.connect(tmp_path / "swarmd.db")
        with side:
            side.execute("UPDATE jobs SET state = 'ready', owner = NULL WHERE id = ?", (job_id,))
        side.close()
        await backend.submit([job()])
        await asyncio.wait_for(second_started.wait(), 10)
    # the fixture stopped the worker with no grace: both runs were cancelled and given back
    assert len(w.running) == 0 and w.running.displaced == 0 and w.in_flight == 0
    check = SqliteBackend(tmp_path)
    await check.open()
    try:
        assert (await check.counts())["ready"] == 1
    finally:
        await check.close()
