"""Archive, then forget, on both backends (a real SQLite file; the real Redis at 127.0.0.1:6379).

Entries leave the live store only in the step that records the anchor; segments and live store
verify as one chain; a job whose entry was archived is still finished: its id is refused at
submit and finishing it again writes nothing; the chain goes on from the anchor even when every
entry was archived. On Redis the ledger list and its id index are trimmed.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from support.backends import make_backend, opened
from support.ledger_fill import finish_jobs
from support.schema_rewind import ARCHIVING_STEP, HORIZON_STEP, UNDO_STEP, archived_then_rewound, rewind

from swarmd.errors import ArchiveError, JobValidationError
from swarmd.ledger.archive import archived_entries, segments, verify_with_archive
from swarmd.ledger.chain import Anchor
from swarmd.ledger.records import OutcomeRecord
from swarmd.model import new_job
from swarmd.queue.archiving import Selection, archive_ledger, older_than
from swarmd.queue.base import Disposition, Finish, QueueBackend
from swarmd.queue.sqlite.backend import DB_NAME, SqliteBackend
from swarmd.storage.horizon import DEFAULT_HORIZON, HASHED_IDS_TABLE, generation, grain_hours
from swarmd.storage.migrations import known_version

__all__ = ["make_backend"]  # the fixture, on both backends


async def _all_ids(backend: QueueBackend, archive: Path) -> list[str | None]:
    anchor = await backend.ledger_anchor()
    archived = [] if anchor is None else [e.job_id for e in archived_entries(archive, anchor.index)]
    return archived + [e.job_id for e in await backend.ledger_entries()]


async def test_archived_entries_leave_the_live_store_and_verify_with_it_as_one_chain(
    make_backend: Any, tmp_path: Path
) -> None:
    archive = tmp_path / "archive"
    async with opened(make_backend) as backend:
        ids = await finish_jobs(backend, 1200, batch=400)
        run = await archive_ledger(backend, Selection(before=1000), archive, chunk=300)
        assert run.entries == 1000 and run.anchor is not None and run.anchor.index == 999
        assert [(s.first, s.last) for s in segments(archive)] == [(0, 299), (300, 599), (600, 899), (900, 999)]
        live = await backend.ledger_entries()
        assert [e.index for e in live] == list(range(1000, 1200))
        assert await backend.ledger_anchor() == run.anchor
        report = await backend.verify()
        assert report.ok and report.entries == 200, report.summary()
        assert verify_with_archive(archive, run.anchor, live).ok
        assert await _all_ids(backend, archive) == ids  # each exactly once, in order
        assert [e.index for e in await backend.ledger_tail(3)] == [1197, 1198, 1199]
        assert [e.index for e in await backend.ledger_entries(0, 2)] == [1000, 1001]
        assert await backend.ledger_entries_of([ids[5], ids[1100]]) == [live[100]]
        if backend.name == "redis":  # the list and its id index hold the live entries only
            assert await backend.client.llen(backend._p + "ledger") == 200
            assert await backend.client.hlen(backend._p + "ledger:ids") == 200


async def test_an_archived_job_stays_finished_submit_refuses_it_and_a_late_finish_writes_nothing(
    make_backend: Any, tmp_path: Path
) -> None:
    async with opened(make_backend) as backend:
        await finish_jobs(backend, 10)
        job = new_job(agent="echo", gid="GID-x", payload={})
        await backend.submit([job])
        (held,) = await backend.reserve(1, lease=60)
        record = OutcomeRecord(
            job_id=job.id, gid=job.gid, agent=job.agent, outcome="succeeded", attempt=1, finished_at=1.0
        ).encode()
        finish = Finish(job.id, Disposition.DONE, record=record, handle=held.handle)
        await backend.finish([finish])
        run = await archive_ledger(backend, Selection(), tmp_path / "archive")
        assert run.entries == 11 and await backend.ledger_entries() == []
        assert await backend.archived_ids([job.id, "never-seen"]) == {job.id}
        with pytest.raises(JobValidationError, match=f"job {job.id} already finished .its ledger entry is archived"):
            await backend.submit([new_job(agent="echo", gid="GID-x", payload={}, job_id=job.id)])
        await backend.finish([finish])  # the same outcome again, as after a lost lease
        assert await backend.ledger_entries() == []
        # Every entry archived: the chain goes on from the anchor.
        await finish_jobs(backend, 2)
        live = await backend.ledger_entries()
        assert [e.index for e in live] == [11, 12] and live[0].prev_hash == run.anchor.hash  # type: ignore[union-attr]
        assert (await backend.verify()).ok
        assert verify_with_archive(tmp_path / "archive", run.anchor, live).ok


async def test_forgetting_refuses_a_stale_anchor_and_writes_nothing(make_backend: Any, tmp_path: Path) -> None:
    async with opened(make_backend) as backend:
        await finish_jobs(backend, 20)
        first = await backend.forget_ledger(4, None)
        with pytest.raises(ArchiveError, match="another archive ran meanwhile"):
            await backend.forget_ledger(9, None)  # planned before the first forget
        with pytest.raises(ArchiveError, match="is not in the live store"):
            await backend.forget_ledger(3, first)
        assert await backend.ledger_anchor() == first
        assert [e.index for e in await backend.ledger_entries()] == list(range(5, 20))


async def test_dropping_instead_of_archiving_keeps_only_the_anchor(make_backend: Any) -> None:
    async with opened(make_backend) as backend:
        ids = await finish_jobs(backend, 30)
        tail = (await backend.ledger_tail(10))[0]
        run = await archive_ledger(backend, Selection(keep=10), None)
        assert run.entries == 20 and run.segments == [] and run.anchor == Anchor(tail.index - 1, tail.prev_hash)
        assert (await backend.verify()).ok
        assert await backend.archived_ids(ids) == set(ids[:20])


async def test_a_state_file_from_before_archiving_is_migrated_and_archives(tmp_path: Path) -> None:
    """The step that adds ``archived_jobs`` runs, with every later one, on a file from before it."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    backend = SqliteBackend(state)
    await backend.open()
    ids = await finish_jobs(backend, 5)
    await backend.close()
    later = range(ARCHIVING_STEP, known_version() + 1)
    assert set(later) <= set(UNDO_STEP), "a migration after archiving needs its undo in UNDO_STEP"
    rewind(state / DB_NAME, ARCHIVING_STEP - 1)
    with sqlite3.connect(state / DB_NAME) as conn:
        assert "archived_jobs" not in {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    backend = SqliteBackend(state)
    await backend.open()
    try:
        run = await archive_ledger(backend, Selection(before=3), tmp_path / "archive")
        assert run.entries == 3 and await backend.archived_ids(ids) == set(ids[:3])
    finally:
        await backend.close()
    with sqlite3.connect(state / DB_NAME) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(known_version()),)


async def test_archived_ids_from_before_the_horizon_stay_refused_after_the_migration(tmp_path: Path) -> None:
    """A file at the version before the horizon (archived ids in ``archived_jobs``, kept forever)
    is migrated: its ids move to the generation of the default horizon, counted from the
    upgrade, and stay refused at submit and for late outcomes until then."""
    state, ids = await archived_then_rewound(tmp_path, jobs=5, archived=3, version=HORIZON_STEP - 1)
    with sqlite3.connect(state / DB_NAME) as conn:
        assert conn.execute("SELECT count(*) FROM archived_jobs").fetchone() == (3,)
    before = time.time()
    backend = SqliteBackend(state)
    await backend.open()
    try:
        after = time.time()
        assert await backend.archived_ids(ids) == set(ids[:3])
        with pytest.raises(JobValidationError, match=f"job {ids[0]} already finished .its ledger entry is archived"):
            await backend.submit([new_job(agent="echo", gid="GID-x", payload={}, job_id=ids[0])])
        # Remembered for the default horizon from the upgrade, then forgotten.
        assert await backend.archived_ids(ids, now=before + DEFAULT_HORIZON - 1) == set(ids[:3])
        later = after + DEFAULT_HORIZON + (grain_hours(DEFAULT_HORIZON) + 1) * 3600
        assert await backend.archived_ids(ids, now=later) == set()
    finally:
        await backend.close()
    with sqlite3.connect(state / DB_NAME) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert "archived_jobs" not in tables
        # through version 6 into its archived_ids, which version 7 keeps aside as they are
        gens = {row[0] for row in conn.execute(f"SELECT DISTINCT gen FROM {HASHED_IDS_TABLE}")}
        assert gens <= {generation(before, DEFAULT_HORIZON), generation(after, DEFAULT_HORIZON)} and len(gens) == 1


async def test_older_than_archives_the_entries_finished_before_the_cutoff_and_stops_at_the_first_newer(
    make_backend: Any, tmp_path: Path
) -> None:
    async with opened(make_backend) as backend:
        old = await finish_jobs(backend, 10, finished_at=1_000.0)
        await finish_jobs(backend, 5, finished_at=3_000.0)
        await finish_jobs(backend, 5, finished_at=1_000.0)  # old again, but after newer ones: kept
        run = await archive_ledger(backend, older_than(2_000.0, now=4_000.0), tmp_path / "archive")
        assert run.entries == 10 and await backend.archived_ids(old) == set(old)
        assert [e.index for e in await backend.ledger_entries()] == list(range(10, 20))
