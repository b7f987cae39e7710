"""Housekeeping holds the state backend in short steps, each timed: the hot path goes between them.

The SQLite backend runs every statement on one thread, so a hot-path commit waits behind
whatever housekeeping runs there. Giving space back is therefore one incremental-vacuum step
per call on that thread, then one WAL checkpoint: a finish submitted while the first step runs
is committed right after it, before the next step (seen in the order SQLite executed the
statements) and before reclaiming returns. Every step (forget, vacuum, wal_checkpoint, expire,
purge_dead) reaches ``swarmd_state_upkeep_step_seconds{step}`` once; on Redis each
housekeeping script does.

A real SQLite file and the real Redis (a key prefix of its own, deleted afterwards; skipped
without Redis). Nothing here is timed: the machine is shared; what is asserted is the order
and the number of steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from support.services import forget_prefix, require_redis

import swarmd.queue.sqlite.backend as sqlite_backend
from swarmd.ledger.records import OutcomeRecord
from swarmd.model import UpkeepStep, new_job
from swarmd.queue.archiving import FORGET_STEP, Selection, archive_ledger
from swarmd.queue.base import Disposition, Finish, QueueBackend, Reserved
from swarmd.queue.sqlite.backend import SqliteBackend
from swarmd.storage.sqlite import VACUUM_PAGES, free_pages
from swarmd.telemetry.metrics import Metrics

METRIC = "swarmd_state_upkeep_step_seconds"
#: ``older_than`` that makes everything finished so far expired.
ALL_FINISHED = -1.0
#: Seconds another writer holds the write lock while a step waits for it.
LOCK_HELD = 0.5


def _done(reserved: Reserved) -> Finish:
    record = OutcomeRecord(
        job_id=reserved.job_id, gid=reserved.gid, agent=reserved.agent, outcome="succeeded",
        attempt=reserved.attempt, finished_at=time.time(),
    )  # fmt: skip
    return Finish(reserved.job_id, Disposition.DONE, record=record.encode(), handle=reserved.handle)


async def _run_all(backend: QueueBackend) -> int:
    reserved = await backend.reserve(100_000, lease=30.0)
    await backend.finish([_done(r) for r in reserved])
    return len(reserved)


def _steps(metrics: Metrics, step: UpkeepStep) -> int:
    value = metrics.registry.get_sample_value(f"{METRIC}_count", {"step": step.value})
    return int(value or 0)


async def test_reclaiming_space_lets_a_finish_commit_between_two_vacuum_steps(tmp_path: Path) -> None:
    backend = SqliteBackend(tmp_path)
    metrics = Metrics(CollectorRegistry())
    await backend.open()
    try:
        # Many freed pages: big jobs run, then their rows (and ledger entries) deleted.
        await backend.submit([new_job(agent="echo", gid="g", payload="x" * 2000) for _ in range(2000)])
        assert await _run_all(backend) == 2000
        await archive_ledger(backend, Selection(), None)  # drops the entries (and gives space back)
        await backend.submit([new_job(agent="echo", gid="g", payload="x" * 2000) for _ in range(2000)])
        await backend.submit([new_job(agent="echo", gid="g")])
        reserved = await backend.reserve(2001, lease=30.0)
        await backend.finish([_done(r) for r in reserved[:-1]])  # frees their rows' pages
        hot = reserved[-1]  # the hot path's job, finished while space is given back
        pending = await backend._run(free_pages, backend.conn)
        assert pending >= 3 * VACUUM_PAGES, f"only {pending} free pages: too few steps to interleave"

        # What SQLite executes on the backend's thread and on the checkpointer's, in order.
        executed: list[str] = []
        backend.conn.set_trace_callback(lambda sql: executed.append(sql.strip()))
        checkpointer = await _aside_connection(backend)
        checkpointer.set_trace_callback(lambda sql: executed.append("checkpointer: " + sql.strip()))
        first_step_held = threading.Event()
        finish_queued = threading.Event()

        def observe(step: str, seconds: float) -> None:  # on the backend's thread, after each step
            metrics.observe_upkeep_step(step, seconds)
            if step == UpkeepStep.VACUUM and not first_step_held.is_set():
                first_step_held.set()  # the thread is held here until the finish is queued behind it
                assert finish_queued.wait(10), "the finish was never queued"

        backend.on_upkeep_step = observe
        ended: list[str] = []
        reclaim = asyncio.create_task(backend.reclaim_space())
        reclaim.add_done_callback(lambda _: ended.append("reclaim"))
        assert await asyncio.to_thread(first_step_held.wait, 10)
        finish = asyncio.create_task(backend.finish([_done(hot)]))
        finish.add_done_callback(lambda _: ended.append("finish"))
        for _ in range(3):  # the finish task runs up to its hand-off to the backend's thread
            await asyncio.sleep(0)
        finish_queued.set()
        report = await finish
        await reclaim
        backend.conn.set_trace_callback(None)

        assert report.ledger_index is not None
        assert ended == ["finish", "reclaim"], "the finish waited for the whole reclaim"
        vacuums = [i for i, sql in enumerate(executed) if sql.startswith("PRAGMA incremental_vacuum")]
        ledger_write = next(i for i, sql in enumerate(executed) if sql.startswith("INSERT INTO ledger"))
        assert len(vacuums) >= 3
        assert vacuums[0] < ledger_write < vacuums[1], "the finish committed right after the first step"
        checkpoints = [i for i, sql in enumerate(executed) if "wal_checkpoint(TRUNCATE)" in sql]
        passive = [i for i, sql in enumerate(executed) if "wal_checkpoint(PASSIVE)" in sql]
        assert all(executed[i].startswith("checkpointer: ") for i in checkpoints + passive)
        assert len(passive) == 1 and passive[0] > vacuums[-1], "one checkpoint, after the last step"
        assert all(i > passive[0] for i in checkpoints), "TRUNCATE only after a PASSIVE one"
        # One observation per step, each its own call on the thread.
        assert _steps(metrics, UpkeepStep.VACUUM) == len(vacuums)
        assert _steps(metrics, UpkeepStep.WAL_CHECKPOINT) == 1
        assert await backend._run(free_pages, backend.conn) < pending
    finally:
        await backend.close()


async def _aside_connection(backend: SqliteBackend) -> sqlite3.Connection:
    """The backend's second connection (checkpoints, long reads), opened by its first checkpoint."""
    await backend.give_back_space()
    assert backend._aside_conn is not None and backend._aside_conn is not backend.conn
    return backend._aside_conn


#: What runs aside, on the second connection and its thread: the statement it starts with, and the call.
ASIDE: dict[str, tuple[str, Callable[[SqliteBackend], Coroutine[Any, Any, object]]]] = {
    "wal_checkpoint": ("PRAGMA wal_checkpoint(PASSIVE)", lambda backend: backend.give_back_space()),
    "archive_read": ("SELECT idx, job_id", lambda backend: backend.ledger_entries(0, 5000)),
}


@pytest.mark.parametrize("work", sorted(ASIDE))
async def test_work_aside_holds_no_commit_of_the_hot_path(tmp_path: Path, work: str) -> None:
    """A WAL checkpoint, and the read of a chunk of entries to archive (~33 ms for 5,000), run
    on a second connection and thread: a finish commits while either is in the middle."""
    statement, call = ASIDE[work]
    backend = SqliteBackend(tmp_path)
    await backend.open()
    try:
        await backend.submit([new_job(agent="echo", gid="g") for _ in range(500)])
        reserved = await backend.reserve(500, lease=30.0)
        await backend.finish([_done(r) for r in reserved[:-1]])  # frames in the WAL, entries to read
        aside = await _aside_connection(backend)
        started = threading.Event()
        finished = threading.Event()

        def trace(sql: str) -> None:  # on the aside thread, as its statement starts
            if sql.strip().startswith(statement) and not started.is_set():
                started.set()
                assert finished.wait(10), "the finish waited for the work aside"

        aside.set_trace_callback(trace)
        running: asyncio.Task[object] = asyncio.create_task(call(backend))
        assert await asyncio.to_thread(started.wait, 10)
        report = await asyncio.wait_for(backend.finish([_done(reserved[-1])]), 10)  # the hot path's commit
        finished.set()
        assert report.ledger_index is not None
        await running
        aside.set_trace_callback(None)
    finally:
        await backend.close()


async def test_a_step_waiting_for_another_writer_counts_only_its_own_hold(tmp_path: Path) -> None:
    """The wait for another writer's transaction (a producer's) is not the step's hold: the hot
    path's commits wait for that writer as much without any step."""
    backend = SqliteBackend(tmp_path)
    observed: list[tuple[str, float]] = []
    backend.on_upkeep_step = lambda step, seconds: observed.append((step, seconds))
    await backend.open()
    try:
        waiting = threading.Event()
        backend.conn.set_trace_callback(lambda sql: waiting.set() if sql.startswith("BEGIN IMMEDIATE") else None)
        with contextlib.closing(sqlite3.connect(tmp_path / "swarmd.db", isolation_level=None)) as producer:
            producer.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
            expire = asyncio.create_task(backend.expire_finished(ALL_FINISHED, 100))
            assert await asyncio.to_thread(waiting.wait, 10)
            locked_from = time.perf_counter()
            await asyncio.sleep(LOCK_HELD)  # the step waits for the lock meanwhile
            producer.execute("COMMIT")
            lock_held = time.perf_counter() - locked_from
        assert await expire == 0
        backend.conn.set_trace_callback(None)
        ((step, seconds),) = observed
        assert step == UpkeepStep.EXPIRE
        assert seconds < lock_held, "the wait for the producer's lock was counted as the step's hold"
    finally:
        await backend.close()


async def test_every_sqlite_housekeeping_step_is_timed_once(tmp_path: Path) -> None:
    backend = SqliteBackend(tmp_path)
    metrics = Metrics(CollectorRegistry())
    backend.on_upkeep_step = metrics.observe_upkeep_step
    await backend.open()
    try:
        n = 2 * FORGET_STEP + 1  # three forgetting steps
        await backend.submit([new_job(agent="echo", gid="g", idempotency_key=f"k{i}") for i in range(n)])
        assert await _run_all(backend) == n
        run = await archive_ledger(backend, Selection(), None)
        assert run.entries == n
        assert _steps(metrics, UpkeepStep.FORGET) == 3
        assert _steps(metrics, UpkeepStep.WAL_CHECKPOINT) == 1  # at the end of reclaiming space
        assert await backend.expire_finished(ALL_FINISHED, n) == n
        assert _steps(metrics, UpkeepStep.EXPIRE) == 1
        assert await backend.give_back_space() in (True, False)
        assert _steps(metrics, UpkeepStep.WAL_CHECKPOINT) == 2
        assert await backend.purge_dead(0.0) == 0
        assert _steps(metrics, UpkeepStep.PURGE_DEAD) == 1
        assert await backend.expire_archived_ids(n, now=time.time() + 400 * 86_400) == n  # past any horizon
        assert _steps(metrics, UpkeepStep.EXPIRE_ARCHIVED_IDS) == 1
    finally:
        await backend.close()


@pytest.mark.redis
async def test_every_redis_housekeeping_script_is_timed_once() -> None:
    from swarmd.queue.redis.backend import RedisBackend  # noqa: PLC0415 - redis-py is optional

    url = require_redis()
    prefix = f"swarmd-test-{os.urandom(5).hex()}"
    backend = RedisBackend(url, prefix=prefix)
    metrics = Metrics(CollectorRegistry())
    backend.on_upkeep_step = metrics.observe_upkeep_step
    await backend.open()
    try:
        n = FORGET_STEP + 1  # two forgetting steps
        await backend.submit([new_job(agent="echo", gid="g", idempotency_key=f"k{i}") for i in range(n)])
        assert await _run_all(backend) == n
        run = await archive_ledger(backend, Selection(), None)
        assert run.entries == n
        assert _steps(metrics, UpkeepStep.FORGET) == 2
        assert await backend.expire_finished(ALL_FINISHED, 2 * n) == n
        assert _steps(metrics, UpkeepStep.EXPIRE) == 1
        assert await backend.purge_dead(0.0) == 0
        assert _steps(metrics, UpkeepStep.PURGE_DEAD) == 1
        assert _steps(metrics, UpkeepStep.VACUUM) == _steps(metrics, UpkeepStep.WAL_CHECKPOINT) == 0  # none on Redis
    finally:
        await backend.close()
        forget_prefix(url, prefix)


def _wal_frames(state: Path) -> tuple[int, int]:
    """The WAL's frames and how many of them are copied into the database, from the wal-index
    (``-shm``): mxFrame at byte 16 of its header, nBackfill at byte 96 (native byte order)."""
    header = (state / "swarmd.db-shm").read_bytes()[:100]
    return int.from_bytes(header[16:20], sys.byteorder), int.from_bytes(header[96:100], sys.byteorder)


@pytest.mark.parametrize("aside", [True, False])
async def test_the_daemons_backend_copies_the_wal_aside_not_in_its_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aside: bool
) -> None:
    """With ``checkpoint_aside`` (the daemon's backend), the WAL is copied into the database by
    checkpoints on the second connection, not by the commit that crosses SQLite's autocheckpoint
    (1,000 pages), whose copy and fsync the hot path's commits would queue behind."""
    monkeypatch.setattr(sqlite_backend, "CHECKPOINT_EVERY", 0.0)  # one after every call, for the test
    backend = SqliteBackend(tmp_path)
    backend.checkpoint_aside = aside
    await backend.open()
    try:
        checkpoints: list[str] = []
        aside_conn = await _aside_connection(backend)
        aside_conn.set_trace_callback(lambda sql: checkpoints.append(sql) if "wal_checkpoint" in sql else None)
        await backend.submit([new_job(agent="echo", gid="g", payload="x" * 4000) for _ in range(1500)])
        frames, copied = _wal_frames(tmp_path)  # before the loop runs anything else
        assert frames > 1000, "the commit wrote past SQLite's autocheckpoint"
        if not aside:
            assert copied == frames and not checkpoints, "SQLite's own checkpoint, inside the commit"
            return
        assert copied < frames, "the commit copied the WAL itself"
        assert backend._checkpointing is not None
        await backend._checkpointing
        frames, copied = _wal_frames(tmp_path)
        assert checkpoints and copied == frames, "a checkpoint aside copied what the commit wrote"
        aside_conn.set_trace_callback(None)
    finally:
        await backend.close()
