"""The numbered migrations of the SQLite state: how a file written by an older swarmd moves forward.

Version 1 is the schema that `swarmd.storage.sqlite` creates in a fresh file. Every later change
to a table, an index or the format of a stored record appends one `Migration` to `MIGRATIONS`,
numbered one above the last, and is never edited once released: a file at version *n* is
brought to the newest version by running the steps *n + 1*, *n + 2*, ... in order. `connect`
runs them, and records each new version in ``meta``, inside the one transaction that opens the
file, so that a file is either wholly at its old version or wholly at the new one.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from swarmd.storage import horizon

#: The version of the schema script: what a fresh file starts at, before any migration.
BASE_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class Migration:
    """One step forward: ``apply`` turns a state at ``to_version - 1`` into ``to_version``.

    ``apply`` runs inside the transaction that opens the file: it uses ``conn.execute`` only
    (``executescript`` would commit half-way), and it raises to refuse, which rolls the whole
    opening back. ``description`` says what the step changes, for the log and for readers.
    """

    to_version: int
    description: str
    apply: Callable[[sqlite3.Connection], None]


def _jobs_name_their_submitter(conn: sqlite3.Connection) -> None:
    """Version 2: a stored job may carry ``submitted_by`` (who submitted it through the API
    socket). No table changes; the version alone makes an older swarmd, whose strict decoder
    would dead-letter such jobs as malformed, refuse the file instead."""


def _swarms_are_counted(conn: sqlite3.Connection) -> None:
    """Version 3: swarms are counted as their members end, and a swarm with a follow-up keeps
    its members' outcomes until the follow-up is submitted (``swarmd.queue.sqlite.workflows``).
    Stored jobs may carry ``parent_id``, ``follows`` and ``follow_when``."""
    conn.execute(
        "CREATE TABLE swarms ("
        " swarm_id TEXT PRIMARY KEY, size INTEGER NOT NULL, ended INTEGER NOT NULL DEFAULT 0,"
        " created_at REAL NOT NULL, ended_at REAL, then_id TEXT, then_body BLOB)"
    )
    conn.execute("CREATE INDEX swarms_then ON swarms (then_id) WHERE then_id IS NOT NULL")
    conn.execute("CREATE INDEX swarms_ended ON swarms (ended_at) WHERE ended_at IS NOT NULL")
    conn.execute(
        "CREATE TABLE swarm_members ("
        " swarm_id TEXT NOT NULL, job_id TEXT NOT NULL, idx INTEGER NOT NULL,"
        " PRIMARY KEY (swarm_id, job_id)) WITHOUT ROWID"
    )


def _archived_jobs_are_remembered(conn: sqlite3.Connection) -> None:
    """Ledger archiving: ``archived_jobs`` keeps a 64-bit hash of each job id whose entry was
    archived, so that the id is still refused at submit once its entry has left the live store
    (the anchor itself lives in ``meta`` under ``ledger_anchor``, no table needed).
    Self-contained: it creates what it needs whatever its number ends up being."""
    conn.execute("CREATE TABLE IF NOT EXISTS archived_jobs (id_key INTEGER PRIMARY KEY) WITHOUT ROWID")


def _idempotency_keys_know_when_their_job_finished(conn: sqlite3.Connection) -> None:
    """Version 5: ``idempotency.finished_at`` (when the key's job finished: done, dead or
    cancelled; NULL while it is queued), so that keys can expire ``result_ttl`` after it.
    Keys of jobs that finished before the upgrade count from the upgrade."""
    conn.execute("ALTER TABLE idempotency ADD COLUMN finished_at REAL")
    conn.execute("CREATE INDEX IF NOT EXISTS idempotency_job ON idempotency (job_id)")
    conn.execute(
        "CREATE INDEX IF NOT EXISTS idempotency_finished ON idempotency (finished_at) WHERE finished_at IS NOT NULL"
    )
    conn.execute(
        "UPDATE idempotency SET finished_at = ? "
        "WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.id = idempotency.job_id AND jobs.state != 'dead')",
        (time.time(),),
    )


def _archived_ids_are_remembered_for_a_horizon(conn: sqlite3.Connection) -> None:
    """Version 6: archived job ids are remembered for a horizon (``archived_id_ttl``), not
    forever: ``archived_ids (gen, id_key)`` replaces ``archived_jobs (id_key)``, ``gen`` being
    the hour at whose start the id is forgotten (`swarmd.storage.horizon`). The primary key
    (gen, id_key), WITHOUT ROWID, is both the lookup (one seek per live generation) and the
    expiry (a range delete on its prefix): no second index, 3 bytes more per row. Ids archived
    before the upgrade go into the generation of the default horizon, counted from the
    upgrade (the settings are not known here)."""
    conn.execute(
        "CREATE TABLE archived_ids ("
        " gen INTEGER NOT NULL, id_key INTEGER NOT NULL, PRIMARY KEY (gen, id_key)) WITHOUT ROWID"
    )
    conn.execute(
        "INSERT INTO archived_ids (gen, id_key) SELECT ?, id_key FROM archived_jobs",
        (horizon.generation(time.time(), horizon.DEFAULT_HORIZON),),
    )
    conn.execute("DROP TABLE archived_jobs")


def _archived_ids_are_kept_in_the_order_they_were_made(conn: sqlite3.Connection) -> None:
    """Version 7: ``archived_ids (gen, made, id_hash)`` replaces ``(gen, id_key)``. ``made``
    (`swarmd.model.job_id_order`: where an id swarmd made sorts among them; 0 for chosen ids)
    comes before the hash in the primary key, so that a forgetting step's ids, made at about
    the same time, are inserted at the end of their generation's b-tree instead of all over it.
    The old table stays as it is, renamed (`horizon.HASHED_IDS_TABLE`: no row is copied, however
    many): lookups probe it too until its generations are forgotten, and the expiry drops it
    once it is empty. An empty one (a fresh file) is dropped here."""
    if conn.execute("SELECT 1 FROM archived_ids LIMIT 1").fetchone() is None:
        conn.execute("DROP TABLE archived_ids")
    else:
        conn.execute(f"ALTER TABLE archived_ids RENAME TO {horizon.HASHED_IDS_TABLE}")
    conn.execute(
        "CREATE TABLE archived_ids ("
        " gen INTEGER NOT NULL, made INTEGER NOT NULL, id_hash INTEGER NOT NULL,"
        " PRIMARY KEY (gen, made, id_hash)) WITHOUT ROWID"
    )


#: Every migration after `BASE_VERSION`, in order.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(2, "jobs may carry submitted_by (the API socket's peer)", _jobs_name_their_submitter),
    Migration(3, "swarms are counted; jobs may have a parent or follow a swarm", _swarms_are_counted),
    Migration(4, "archived ledger entries leave their job ids' hashes in archived_jobs", _archived_jobs_are_remembered),
    Migration(5, "idempotency keys record when their job finished", _idempotency_keys_know_when_their_job_finished),
    Migration(
        6,
        "archived job ids move to archived_ids, by generation, forgotten after archived_id_ttl",
        _archived_ids_are_remembered_for_a_horizon,
    ),
    Migration(
        7,
        "archived_ids are keyed by the order their ids were made in, then their hash",
        _archived_ids_are_kept_in_the_order_they_were_made,
    ),
)


def known_version() -> int:
    """The newest schema version this swarmd knows, the one every file it opens ends at."""
    return MIGRATIONS[-1].to_version if MIGRATIONS else BASE_VERSION


def pending(found: int) -> Sequence[Migration]:
    """The steps that bring a file at version ``found`` to `known_version`, in order."""
    for number, step in enumerate(MIGRATIONS, start=BASE_VERSION + 1):
        if step.to_version != number:
            raise RuntimeError(f"migration {step.description!r} is numbered {step.to_version}, expected {number}")
    return [step for step in MIGRATIONS if step.to_version > found]


def run_pending(conn: sqlite3.Connection, found: int) -> list[Migration]:
    """Run the steps a file at version ``found`` lacks, recording each new version in ``meta``.

    The caller holds the write transaction (and rolls it back if a step raises). Returns the
    steps that ran.
    """
    steps = list(pending(found))
    for step in steps:
        step.apply(conn)
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (str(step.to_version),))
    return steps
