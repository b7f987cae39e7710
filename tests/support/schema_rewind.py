"""Take schema migrations back out of an SQLite state file: what an older swarmd left, for the
tests of the migrations that archiving brought (4: ``archived_jobs``, and every later one).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from support.ledger_fill import finish_jobs
from swarmd.queue.archiving import Selection, archive_ledger
from swarmd.queue.sqlite.backend import DB_NAME, SqliteBackend
from swarmd.storage.horizon import HASHED_IDS_TABLE
from swarmd.storage.migrations import MIGRATIONS, known_version

#: The schema version that adds ``archived_jobs``.
ARCHIVING_STEP = next(step.to_version for step in MIGRATIONS if "archived_jobs" in step.description)
#: The schema version that moves them to ``archived_ids``, by generation.
HORIZON_STEP = next(step.to_version for step in MIGRATIONS if "archived_ids" in step.description)
#: The schema version that keys ``archived_ids`` by the order their ids were made in.
ORDERED_STEP = next(step.to_version for step in MIGRATIONS if "order their ids were made" in step.description)


#: How to take each step at or after the one that adds ``archived_jobs`` back out of a file, so
#: that the file is what a swarmd from before archiving left (a step added later needs its own).
UNDO_STEP: dict[int, tuple[str, ...]] = {
    ARCHIVING_STEP: ("DROP TABLE archived_jobs",),
    ARCHIVING_STEP + 1: (
        "DROP INDEX IF EXISTS idempotency_finished",
        "DROP INDEX IF EXISTS idempotency_job",
        "ALTER TABLE idempotency DROP COLUMN finished_at",
    ),
    ARCHIVING_STEP + 2: (  # archived_ids by generation back into the one table archived_jobs
        "CREATE TABLE archived_jobs (id_key INTEGER PRIMARY KEY) WITHOUT ROWID",
        "INSERT OR IGNORE INTO archived_jobs (id_key) SELECT id_key FROM archived_ids",
        "DROP TABLE archived_ids",
    ),
    ARCHIVING_STEP + 3: (  # archived_ids keyed by (gen, id_key) again: the hash alone
        f"CREATE TABLE IF NOT EXISTS {HASHED_IDS_TABLE} (gen INTEGER NOT NULL, id_key INTEGER NOT NULL,"
        " PRIMARY KEY (gen, id_key)) WITHOUT ROWID",
        f"INSERT OR IGNORE INTO {HASHED_IDS_TABLE} (gen, id_key) SELECT gen, id_hash FROM archived_ids",
        "DROP TABLE archived_ids",
        f"ALTER TABLE {HASHED_IDS_TABLE} RENAME TO archived_ids",
    ),
}


def rewind(path: Path, to_version: int) -> None:
    """Take the steps after ``to_version`` (at or after archiving) back out of the file."""
    with sqlite3.connect(path) as conn:
        for version in reversed(range(to_version + 1, known_version() + 1)):
            for statement in UNDO_STEP[version]:
                conn.execute(statement)
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(to_version),))


async def archived_then_rewound(parent: Path, *, jobs: int, archived: int, version: int) -> tuple[Path, list[str]]:
    """A state dir in ``parent`` with ``jobs`` finished jobs, the first ``archived`` of them
    archived (dropped, their ids remembered), its file then taken back to schema ``version``;
    and the jobs' ids."""
    state = parent / "state"
    state.mkdir(mode=0o700)
    backend = SqliteBackend(state)
    await backend.open()
    try:
        ids = await finish_jobs(backend, jobs)
        await archive_ledger(backend, Selection(before=archived), None)
    finally:
        await backend.close()
    rewind(state / DB_NAME, version)
    return state, ids
