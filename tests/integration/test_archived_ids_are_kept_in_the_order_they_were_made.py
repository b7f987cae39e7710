"""Issue 17: archived job ids are keyed by the millisecond their id was made, then its hash, so
that forgetting a step's entries writes a few pages of ``archived_ids`` at the end of its
generation instead of one page an id (a real SQLite file; its write-ahead log read as SQLite
wrote it).

A state file from before (schema version 6: hash only) is migrated: the ids it had archived stay
refused until their generation is forgotten, and the ``meta`` row that says so goes with it.
"""

from __future__ import annotations

import os
import sqlite3
import struct
import time
from pathlib import Path

import pytest
from support.ledger_fill import finish_jobs

from swarmd.errors import JobValidationError
from swarmd.ledger.sqlite import forget_through, read_anchor
from swarmd.model import job_id_made_ms, new_job
from swarmd.queue.archiving import Selection, archive_ledger
from swarmd.queue.sqlite.backend import DB_NAME, SqliteBackend
from swarmd.storage.horizon import DEFAULT_HORIZON, UNORDERED_IDS_KEY, grain_hours
from swarmd.storage.migrations import MIGRATIONS, known_version

#: The schema version that keys archived ids by the millisecond their id was made.
_MADE_STEP = next(step.to_version for step in MIGRATIONS if "millisecond" in step.description)
#: Long enough after now that the default horizon's generations of now are dead.
_PAST_IT = DEFAULT_HORIZON + (grain_hours(DEFAULT_HORIZON) + 1) * 3600


def _wal_pages(path: Path) -> list[int]:
    """The page number of every frame in the database's write-ahead log, in order."""
    wal = path.with_name(path.name + "-wal").read_bytes()
    (page_size,) = struct.unpack(">I", wal[8:12])
    frame = 24 + page_size
    return [struct.unpack(">I", wal[at : at + 4])[0] for at in range(32, len(wal) - frame + 1, frame)]


async def test_a_forgetting_step_writes_a_few_pages_of_archived_ids_however_many_its_generation_holds(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    backend = SqliteBackend(state)
    await backend.open()
    try:
        # Ids as new_job_id makes them, one a millisecond (a daemon makes ~15 in one at most).
        first = time.time_ns() // 1_000_000 - 20_400
        made = [f"{first + n:012x}{os.urandom(10).hex()}" for n in range(20_400)]
        ids = await finish_jobs(backend, 20_400, batch=5000, job_ids=made)
        now = time.time()
        run = await archive_ledger(backend, Selection(before=20_000), None, remember_for=DEFAULT_HORIZON)
        assert run.entries == 20_000
    finally:
        await backend.close()
    path = state / DB_NAME
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
        expected = read_anchor(conn)
        conn.execute("BEGIN IMMEDIATE")
        forget_through(conn, 20_199, expected, remember_for=DEFAULT_HORIZON, now=now)  # the same generation
        conn.execute("COMMIT")
        written = set(_wal_pages(path))
        id_pages = {page for (page,) in conn.execute("SELECT pageno FROM dbstat WHERE name = 'archived_ids'")}
        rows = conn.execute("SELECT made_ms FROM archived_ids ORDER BY made_ms").fetchall()
    finally:
        conn.close()
    assert len(rows) == 20_200 and len(id_pages) > 50  # a generation of ~20,000 ids: many leaves
    assert [made for (made,) in rows] == sorted(job_id_made_ms(job_id) for job_id in ids[:20_200])
    # 200 ids made within a few milliseconds land on the last leaves (and the path to them); a
    # hash alone put each on a leaf of its own: ~90 of these pages for the same step.
    assert 0 < len(written & id_pages) <= 8, sorted(written & id_pages)


def _rewind_to_hash_only(path: Path) -> None:
    """Take the step to version 7 back out of the file: what a swarmd of version 6 left."""
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE archived_ids_v6 (gen INTEGER NOT NULL, id_key INTEGER NOT NULL,"
            " PRIMARY KEY (gen, id_key)) WITHOUT ROWID"
        )
        conn.execute("INSERT INTO archived_ids_v6 (gen, id_key) SELECT gen, id_hash FROM archived_ids")
        conn.execute("DROP TABLE archived_ids")
        conn.execute("ALTER TABLE archived_ids_v6 RENAME TO archived_ids")
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(_MADE_STEP - 1),))


async def test_ids_archived_under_the_hash_alone_stay_refused_after_the_migration(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    backend = SqliteBackend(state)
    await backend.open()
    ids = await finish_jobs(backend, 6)
    await archive_ledger(backend, Selection(before=3), None)
    await backend.close()
    assert known_version() == _MADE_STEP, "a later migration needs its own undo here"
    _rewind_to_hash_only(state / DB_NAME)
    backend = SqliteBackend(state)
    await backend.open()
    try:
        assert await backend.archived_ids(ids) == set(ids[:3])
        with pytest.raises(JobValidationError, match=f"job {ids[0]} already finished .its ledger entry is archived"):
            await backend.submit([new_job(agent="echo", gid="GID-x", payload={}, job_id=ids[0])])
        await archive_ledger(backend, Selection(), None)  # archived after the migration: with their millisecond
        assert await backend.archived_ids(ids) == set(ids)
        with sqlite3.connect(state / DB_NAME) as conn:
            rows = dict(conn.execute("SELECT id_hash, made_ms FROM archived_ids"))
            unordered = conn.execute("SELECT value FROM meta WHERE key = ?", (UNORDERED_IDS_KEY,)).fetchone()
        assert sorted(rows.values()) == [0, 0, 0, *sorted(job_id_made_ms(job_id) for job_id in ids[3:])]
        assert unordered is not None
        later = time.time() + _PAST_IT
        assert await backend.archived_ids(ids, now=later) == set()
        assert await backend.expire_archived_ids(100, now=later) == 6
        with sqlite3.connect(state / DB_NAME) as conn:
            assert conn.execute("SELECT value FROM meta WHERE key = ?", (UNORDERED_IDS_KEY,)).fetchone() is None
    finally:
        await backend.close()


def test_the_millisecond_is_read_only_from_ids_swarmd_made() -> None:
    made = "019ae5b0c3d1" + "ab" * 10
    assert job_id_made_ms(made) == 0x019AE5B0C3D1
    assert job_id_made_ms(made.upper()) == 0  # not what new_job_id makes
    assert job_id_made_ms("nightly-report-2026-12-03") == 0
    assert job_id_made_ms(made + "0") == 0
