"""Issue 17: archived job ids are keyed by the order swarmd made them in (`job_id_order`), then
their hash, so that forgetting a step's entries writes a few pages of ``archived_ids`` at the
end of its generation instead of one page an id (a real SQLite file; its write-ahead log read as
SQLite wrote it).

A state file from before (schema version 6: the hash alone) is migrated without copying a row:
its table is kept aside, the ids in it stay refused until their generation is forgotten, and the
expiry drops it once it is empty.
"""

from __future__ import annotations

import os
import sqlite3
import struct
import time
from pathlib import Path

import pytest
from support.ledger_fill import finish_jobs
from support.schema_rewind import ORDERED_STEP, archived_then_rewound

from swarmd.errors import JobValidationError
from swarmd.ledger.sqlite import forget_through, read_anchor
from swarmd.model import job_id_order, new_job, new_job_ids
from swarmd.queue.archiving import Selection, archive_ledger
from swarmd.queue.sqlite.backend import DB_NAME, SqliteBackend
from swarmd.storage.horizon import DEFAULT_HORIZON, HASHED_IDS_TABLE, grain_hours

#: Long enough after now that the default horizon's generations of now are dead.
_PAST_IT = DEFAULT_HORIZON + (grain_hours(DEFAULT_HORIZON) + 1) * 3600
#: Jobs archived before the step that is looked at, and the step's size.
_BEFORE, _STEP = 20_000, 200


def _wal_pages(path: Path) -> list[int]:
    """The page number of every frame in the database's write-ahead log, in order."""
    wal = path.with_name(path.name + "-wal").read_bytes()
    (page_size,) = struct.unpack(">I", wal[8:12])
    frame = 24 + page_size
    return [struct.unpack(">I", wal[at : at + 4])[0] for at in range(32, len(wal) - frame + 1, frame)]


def _one_a_millisecond(count: int) -> list[str]:
    """Ids as `new_job_id` makes them for jobs submitted one by one, each in a millisecond of
    its own."""
    first = time.time_ns() // 1_000_000 - count
    return [f"{first + n:012x}{os.urandom(10).hex()}" for n in range(count)]


def _in_batches(count: int) -> list[str]:
    """Ids as `new_job_ids` makes them for batches of 5,000 (one millisecond a batch)."""
    return [job_id for start in range(0, count, 5000) for job_id in new_job_ids(min(5000, count - start))]


@pytest.mark.parametrize("made", [_one_a_millisecond, _in_batches], ids=["one-a-millisecond", "in-batches"])
async def test_a_forgetting_step_writes_a_few_pages_of_archived_ids_however_many_its_generation_holds(
    tmp_path: Path, made: object
) -> None:
    assert callable(made)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    backend = SqliteBackend(state)
    await backend.open()
    try:
        ids = await finish_jobs(backend, _BEFORE + 2 * _STEP, batch=5000, job_ids=made(_BEFORE + 2 * _STEP))
        now = time.time()
        run = await archive_ledger(backend, Selection(before=_BEFORE), None, remember_for=DEFAULT_HORIZON)
        assert run.entries == _BEFORE
    finally:
        await backend.close()
    path = state / DB_NAME
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
        try:
            conn.execute("SELECT 1 FROM dbstat LIMIT 1")
        except sqlite3.OperationalError:
            pytest.skip("this SQLite has no dbstat table, which tells the pages of archived_ids")
        expected = read_anchor(conn)
        conn.execute("BEGIN IMMEDIATE")  # the same generation as the archive's
        forget_through(conn, _BEFORE + _STEP - 1, expected, remember_for=DEFAULT_HORIZON, now=now)
        conn.execute("COMMIT")
        written = set(_wal_pages(path))
        id_pages = {page for (page,) in conn.execute("SELECT pageno FROM dbstat WHERE name = 'archived_ids'")}
        rows = conn.execute("SELECT made FROM archived_ids ORDER BY made").fetchall()
    finally:
        conn.close()
    assert len(rows) == _BEFORE + _STEP and len(id_pages) > 50  # a generation of 20,200 ids: many leaves
    assert [made for (made,) in rows] == sorted(job_id_order(job_id) for job_id in ids[: _BEFORE + _STEP])
    # 200 ids made one after the other land on the last leaves (and the path to them); the hash
    # alone put each on a leaf of its own: about 90 of these pages for the same step.
    assert 0 < len(written & id_pages) <= 8, sorted(written & id_pages)


async def test_ids_archived_under_the_hash_alone_stay_refused_after_the_migration(tmp_path: Path) -> None:
    state, ids = await archived_then_rewound(tmp_path, jobs=6, archived=3, version=ORDERED_STEP - 1)
    backend = SqliteBackend(state)
    await backend.open()
    try:
        with sqlite3.connect(state / DB_NAME) as conn:  # kept aside as they were, not copied
            assert conn.execute(f"SELECT count(*) FROM {HASHED_IDS_TABLE}").fetchone() == (3,)
            assert conn.execute("SELECT count(*) FROM archived_ids").fetchone() == (0,)
        assert await backend.archived_ids(ids) == set(ids[:3])
        with pytest.raises(JobValidationError, match=f"job {ids[0]} already finished .its ledger entry is archived"):
            await backend.submit([new_job(agent="echo", gid="GID-x", payload={}, job_id=ids[0])])
        await archive_ledger(backend, Selection(), None)  # archived after the migration: in order
        assert await backend.archived_ids(ids) == set(ids)
        with sqlite3.connect(state / DB_NAME) as conn:
            made = sorted(row[0] for row in conn.execute("SELECT made FROM archived_ids"))
        assert made == sorted(job_id_order(job_id) for job_id in ids[3:])
        later = time.time() + _PAST_IT
        assert await backend.archived_ids(ids, now=later) == set()
        assert await backend.expire_archived_ids(100, now=later) == 6  # both tables, in one step
        with sqlite3.connect(state / DB_NAME) as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert HASHED_IDS_TABLE not in tables and "archived_ids" in tables
        assert await backend.archived_ids(ids) == set()
    finally:
        await backend.close()


async def test_a_fresh_state_file_has_no_table_of_hashed_ids(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    backend = SqliteBackend(state)
    await backend.open()
    await backend.close()
    with sqlite3.connect(state / DB_NAME) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "archived_ids" in tables and HASHED_IDS_TABLE not in tables


def test_the_order_is_read_only_from_ids_swarmd_made() -> None:
    made = "019ae5b0c3d1" + "ab" * 10
    assert job_id_order(made) == 0x019AE5B0C3D1A  # the millisecond, then 4 bits of the randomness
    assert job_id_order(made) < 2**47  # six bytes in an SQLite record (until 2248)
    assert job_id_order(made.upper()) == 0  # not what new_job_id makes
    assert job_id_order("nightly-report-2026-12-03") == 0
    assert job_id_order(made + "0") == 0
    batch = new_job_ids(1000)
    assert [job_id_order(job_id) for job_id in batch] == sorted(job_id_order(job_id) for job_id in batch)
