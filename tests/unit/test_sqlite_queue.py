"""The SQLite queue's own bookkeeping: a finished job's id stays taken, a periodic recovery
takes back only other owners' leases, a transaction that cannot begin leaves fsync on, and a
reserve reads only ready rows however many delayed ones wait.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import msgspec
import pytest
from support.worker import LEASE, job

from swarmd.errors import JobValidationError
from swarmd.queue.base import Disposition, Finish
from swarmd.queue.sqlite.backend import SqliteBackend
from swarmd.storage.sqlite import connect, transaction


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
