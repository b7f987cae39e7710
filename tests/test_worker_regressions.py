"""Regressions found by review: each test fails on the code before its fix.

In-process worker on a real SQLite file; events, not sleeps, decide when things happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
from prometheus_client import CollectorRegistry

from swarmd.config import Settings
from swarmd.errors import JobValidationError
from swarmd.model import Job, new_job
from swarmd.queue.base import Disposition, Finish
from swarmd.queue.sqlite.backend import SqliteBackend
from swarmd.registry import AgentPolicy, Handler, Registry
from swarmd.runtime.builtin_agents import register_builtins
from swarmd.runtime.worker import Worker
from swarmd.storage.sqlite import connect, transaction
from swarmd.telemetry.metrics import Metrics
from swarmd.telemetry.tracing import Tracing

LEASE = 30.0


def job(agent: str = "echo", **fields: Any) -> Job:
    return new_job(agent=agent, gid="GID-r", **fields)


@asynccontextmanager
async def worker(
    state: Path, handlers: dict[str, tuple[Handler, AgentPolicy]] | None = None, **settings: Any
) -> AsyncIterator[tuple[SqliteBackend, Worker]]:
    backend = SqliteBackend(state)
    await backend.open()
    await backend.listen()
    registry = Registry()
    register_builtins(registry)
    for name, (handler, policy) in (handlers or {}).items():
        registry.register(name, handler, policy)
    w = Worker(
        backend,
        registry,
        Settings(**{"poll_interval": 0.05, "backoff_base": 0.01, "backoff_cap": 0.01, **settings}),
        Metrics(CollectorRegistry(), agents=registry.names()),
        Tracing(None),
    )
    task = asyncio.get_running_loop().create_task(w.run())
    try:
        yield backend, w
    finally:
        w.stop(0)
        w.stop()
        await asyncio.wait_for(task, 10)
        await backend.close()


async def ledger(backend: SqliteBackend) -> list[dict[str, Any]]:
    return [msgspec.json.decode(entry.record) for entry in await backend.ledger_entries()]


async def until(predicate: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.01)


async def test_a_finished_jobs_id_cannot_be_submitted_again(tmp_path: Path) -> None:
    backend = SqliteBackend(tmp_path)
    await backend.open()
    try:
        await backend.submit([job(job_id="fixed-1")])
        [held] = await backend.reserve(1, lease=LEASE)
        record = msgspec.json.encode({"agent_gid": "GID-r", "job_id": "fixed-1", "outcome": "succeeded"})
        await backend.finish([Finish(held.job_id, Disposition.DONE, record=record)])
        # Its row is gone; were the id accepted again, its second outcome could never be recorded.
        with pytest.raises(JobValidationError, match="job fixed-1 already finished"):
            await backend.submit([job(job_id="fixed-1")])
        assert await backend.counts() == {"ready": 0, "delayed": 0, "leased": 0, "dead": 0}
    finally:
        await backend.close()


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
        await until(lambda: _has_entries(backend))
        [entry] = await ledger(backend)
    assert runs == 2  # retried once like any failure, not re-run without end
    assert (entry["outcome"], entry["attempt"], entry["error"]["type"]) == ("dead_lettered", 2, "HandlerCancelled")


async def _has_entries(backend: SqliteBackend) -> bool:
    return bool(await backend.ledger_entries())


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
        await until(lambda: _has_entries(backend))
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
        await until(lambda: _has_entries(backend))
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


async def test_the_periodic_recovery_never_takes_back_a_lease_of_its_own(tmp_path: Path) -> None:
    mine = SqliteBackend(tmp_path, owner="me")
    theirs = SqliteBackend(tmp_path, owner="them")
    await mine.open()
    await theirs.open()
    try:
        await mine.submit([job(), job()])
        await mine.reserve(1, lease=0.01)  # still running here, its renewal late
        await theirs.reserve(1, lease=0.01)  # a dead holder's lease
        await asyncio.sleep(0.05)
        assert await mine.recover(all_leases=False) == 1  # theirs only
        assert (await mine.counts())["leased"] == 1
    finally:
        await mine.close()
        await theirs.close()


def test_a_lease_transaction_that_cannot_begin_leaves_commits_fsynced(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    conn = connect(path)
    conn.execute("PRAGMA busy_timeout = 50")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # e.g. a CLI command holding the write lock
    try:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        with pytest.raises(sqlite3.OperationalError, match="locked"), transaction(conn, no_fsync=True):
            pass
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # still FULL
    finally:
        other.execute("ROLLBACK")
        other.close()
        conn.close()


async def test_a_reserve_does_not_walk_the_delayed_jobs_ahead_of_a_ready_one(tmp_path: Path) -> None:
    backend = SqliteBackend(tmp_path)
    await backend.open()
    try:
        await backend.submit([job(delay=3600.0) for _ in range(5000)])  # a backlog of retries/delays
        [ready] = await backend.submit([job()])
        steps = 0

        def count() -> int:
            nonlocal steps
            steps += 1
            return 0  # 0: carry on

        # Deterministic cost: SQLite virtual-machine instructions, in units of 100, not seconds.
        backend.conn.set_progress_handler(count, 100)
        reserved = backend._reserve(1, LEASE, ())
        backend.conn.set_progress_handler(None, 100)
        assert [r.job_id for r in reserved] == [ready]
        # Walking 5,000 delayed rows costs well over 5,000 steps of 100 instructions; a reserve
        # that reads only ready rows (and promotes none) costs a few.
        assert steps < 50, steps
        counts = await backend.counts()
        assert (counts["delayed"], counts["leased"]) == (5000, 1)
    finally:
        await backend.close()


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
        await until(lambda: _has_entries(backend))
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
