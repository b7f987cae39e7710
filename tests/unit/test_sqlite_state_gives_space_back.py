"""The SQLite state gives space back: expired keys leave the file, the WAL is checkpointed and
truncated after large deletes (never waiting on a reader), and a file from before keys knew
when their job finished is upgraded so that the keys of jobs already finished expire too."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

from swarmd.ledger.records import OutcomeRecord
from swarmd.model import new_job
from swarmd.queue.base import Disposition, Finish
from swarmd.queue.sqlite.backend import DB_NAME, SqliteBackend
from swarmd.storage import migrations
from swarmd.storage.sqlite import _SCHEMA

#: ``older_than`` that makes everything finished so far expired.
ALL_FINISHED = -1.0


async def _finish_all(backend: SqliteBackend) -> int:
    reserved = await backend.reserve(100_000, lease=30.0)
    await backend.finish(
        [
            Finish(
                r.job_id,
                Disposition.DONE,
                record=OutcomeRecord(
                    job_id=r.job_id, gid=r.gid, agent=r.agent, outcome="succeeded", attempt=r.attempt,
                    finished_at=time.time(),
                ).encode(),
                handle=r.handle,
            )
            for r in reserved
        ]
    )  # fmt: skip
    return len(reserved)


async def test_after_a_large_expiry_the_wal_is_truncated(tmp_path: Path) -> None:
    backend = SqliteBackend(tmp_path)
    await backend.open()
    try:
        await backend.submit([new_job(agent="echo", gid="g", idempotency_key=f"k{i}") for i in range(3000)])
        assert await _finish_all(backend) == 3000
        assert await backend.expire_finished(ALL_FINISHED, 10_000) == 3000
        wal = tmp_path / (DB_NAME + "-wal")
        assert wal.stat().st_size > 0

        assert await backend.give_back_space() is True
        assert wal.stat().st_size == 0
    finally:
        await backend.close()


async def test_a_reader_holding_a_snapshot_makes_truncation_wait_for_the_next_pass(tmp_path: Path) -> None:
    backend = SqliteBackend(tmp_path)
    await backend.open()
    try:
        await backend.submit([new_job(agent="echo", gid="g", idempotency_key=f"k{i}") for i in range(100)])
        with contextlib.closing(sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)) as reader:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM jobs").fetchone()  # holds a snapshot
            await _finish_all(backend)
            assert await backend.give_back_space() is False  # answered at once, not after busy_timeout
            reader.execute("COMMIT")
        assert await backend.give_back_space() is True
    finally:
        await backend.close()


def _file_before_keys_knew_when_their_job_finished(path: Path) -> int:
    """A state file at the version just before ``idempotency.finished_at``, with a finished
    job's key and a queued job's key; returns that version."""
    step = next(m for m in migrations.MIGRATIONS if "idempotency keys record when" in m.description)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.executescript(_SCHEMA)
        conn.execute("BEGIN")
        for earlier in migrations.MIGRATIONS:
            if earlier.to_version < step.to_version:
                earlier.apply(conn)
        conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(step.to_version - 1),))
        conn.execute("INSERT INTO idempotency (key, job_id) VALUES ('finished', 'job-finished')")
        conn.execute("INSERT INTO idempotency (key, job_id) VALUES ('queued', 'job-queued')")
        conn.execute(
            "INSERT INTO jobs (id, agent, gid, state, body) VALUES ('job-queued', 'echo', 'g', 'ready', x'00')"
        )
        conn.execute("COMMIT")
    return step.to_version - 1


async def test_an_upgraded_file_expires_the_keys_of_jobs_that_finished_before(tmp_path: Path) -> None:
    _file_before_keys_knew_when_their_job_finished(tmp_path / DB_NAME)
    backend = SqliteBackend(tmp_path)
    await backend.open()  # migrates
    try:
        assert await backend.expire_finished(ALL_FINISHED, 1000) == 1
        keys = backend.conn.execute("SELECT key, finished_at FROM idempotency").fetchall()
        assert keys == [("queued", None)]
    finally:
        await backend.close()
