"""Workflows on the SQLite file: swarm counts, follow-ups and children, inside the caller's transaction.

Every swarm is a row of ``swarms`` (its size, how many members have ended). The commit that
writes a member's final ledger entry counts it (`count_ended`); the commit that counts the
last one marks the swarm ended and, if the swarm has a follow-up, inserts it as a ready job:
one transaction, so the follow-up exists exactly when the swarm has ended, once. A swarm
with a follow-up also keeps its members' ledger indices in ``swarm_members``, so the follow-up
finds their outcomes without a scan of the ledger. Children a handler submitted are inserted
by the commit that records their parent's first outcome (`insert_jobs`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Final

import msgspec

from swarmd.errors import JobValidationError
from swarmd.ledger.chain import StoredEntry
from swarmd.ledger.sqlite import entry_from_row
from swarmd.model import Job, JobState, SwarmPlan, decode_job, encode_job

_INSERT_JOB = (
    "INSERT INTO jobs (id, agent, gid, priority, not_before, state, attempt, swarm_id, body) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def job_row(job: Job, now: float) -> tuple[Any, ...]:
    """The ``jobs`` row of a new job (delayed if its not_before is ahead of ``now``)."""
    return (
        job.id,
        job.agent,
        job.gid,
        job.priority,
        job.not_before,
        JobState.DELAYED.value if job.not_before > now else JobState.READY.value,
        job.attempt,
        job.swarm_id,
        encode_job(job),
    )


def insert_jobs(conn: sqlite3.Connection, jobs: Sequence[Job], now: float) -> None:
    """Insert new jobs; an id already queued is a JobValidationError (the transaction fails)."""
    try:
        conn.executemany(_INSERT_JOB, [job_row(job, now) for job in jobs])
    except sqlite3.IntegrityError as exc:
        raise JobValidationError("id", f"a job with this id already exists ({exc})") from None


def register_swarms(conn: sqlite3.Connection, jobs: Sequence[Job], plans: Sequence[SwarmPlan], now: float) -> None:
    """Count the swarms among ``jobs`` (the jobs this transaction creates: a member whose
    idempotency key found an earlier job is not one) from now on, and keep the follow-ups of
    ``plans``."""
    sizes: dict[str, int] = {}
    for job in jobs:
        if job.swarm_id is not None:
            sizes[job.swarm_id] = sizes.get(job.swarm_id, 0) + 1
    if sizes:
        conn.executemany(
            "INSERT OR IGNORE INTO swarms (swarm_id, size, created_at) VALUES (?, ?, ?)",
            [(swarm_id, size, now) for swarm_id, size in sizes.items()],
        )
    for plan in plans:
        if plan.swarm_id not in sizes:
            continue  # no member is new: the swarm this submit names has none to wait for
        conn.execute(
            "UPDATE swarms SET then_id = ?, then_body = ? WHERE swarm_id = ? AND then_id IS NULL",
            (plan.then.id, encode_job(plan.then), plan.swarm_id),
        )


def count_ended(
    conn: sqlite3.Connection, ended: Sequence[tuple[str, str, int]], now: float
) -> tuple[list[str], list[str]]:
    """Count members that ended (job id, swarm id, ledger index: entries written in this
    transaction, each once); return the swarms that ended and the follow-ups submitted."""
    if not ended:
        return [], []
    by_swarm: dict[str, list[tuple[str, int]]] = {}
    for job_id, swarm_id, index in ended:
        by_swarm.setdefault(swarm_id, []).append((job_id, index))
    rows = conn.execute(
        "SELECT swarm_id, size, ended, then_body FROM swarms "
        "WHERE swarm_id IN (SELECT value FROM json_each(?)) AND ended_at IS NULL",
        (msgspec.json.encode(list(by_swarm)).decode(),),
    ).fetchall()
    swarms_ended: list[str] = []
    follow_ups: list[Job] = []
    for swarm_id, size, before, then_body in rows:
        members = by_swarm[swarm_id]
        if then_body is not None:
            conn.executemany(
                "INSERT INTO swarm_members (swarm_id, job_id, idx) VALUES (?, ?, ?)",
                [(swarm_id, job_id, index) for job_id, index in members],
            )
        count = before + len(members)
        if count >= size:
            swarms_ended.append(swarm_id)
            if then_body is not None:
                follow_up = decode_job(then_body)
                follow_ups.append(msgspec.structs.replace(follow_up, enqueued_at=now))
        conn.execute(
            "UPDATE swarms SET ended = ?, ended_at = ? WHERE swarm_id = ?",
            (count, now if count >= size else None, swarm_id),
        )
    insert_jobs(conn, follow_ups, now)
    return swarms_ended, [job.id for job in follow_ups]


def swarm_progress(conn: sqlite3.Connection, swarm_id: str) -> tuple[int, int, str | None] | None:
    """(size, ended, follow-up id) of a counted swarm; None if the store keeps no count of it."""
    row = conn.execute("SELECT size, ended, then_id FROM swarms WHERE swarm_id = ?", (swarm_id,)).fetchone()
    return None if row is None else (int(row[0]), int(row[1]), row[2])


def swarm_outcomes(conn: sqlite3.Connection, swarm_id: str) -> list[StoredEntry]:
    """The ledger entries of the ended members of a swarm with a follow-up, in ledger order."""
    rows = conn.execute(
        "SELECT l.idx, l.job_id, l.prev_hash, l.hash, l.record FROM swarm_members m "
        "JOIN ledger l ON l.idx = m.idx WHERE m.swarm_id = ? ORDER BY l.idx",
        (swarm_id,),
    )
    return [entry_from_row(row) for row in rows]


#: A swarm whose follow-up has not been recorded: not submitted yet (the swarm has not ended),
#: or submitted and still queued or running (its row is there and not dead).
_FOLLOW_UP_PENDING: Final = (
    "s.then_id IS NOT NULL AND (s.ended_at IS NULL"
    " OR EXISTS (SELECT 1 FROM jobs j WHERE j.id = s.then_id AND j.state != 'dead'))"
)


def archive_hold(conn: sqlite3.Connection) -> int | None:
    """The lowest ledger index of a member of a swarm whose follow-up is pending (None: none):
    archiving stops before it, so that the follow-up finds its swarm's outcomes live."""
    row = conn.execute(
        f"SELECT min(m.idx) FROM swarms s JOIN swarm_members m ON m.swarm_id = s.swarm_id WHERE {_FOLLOW_UP_PENDING}"
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def awaiting(conn: sqlite3.Connection, job_id: str) -> tuple[str, int, int, Job] | None:
    """(swarm id, size, ended, the follow-up) if ``job_id`` is the follow-up of a swarm that has
    not ended yet (so it is not submitted yet); else None."""
    row = conn.execute(
        "SELECT swarm_id, size, ended, then_body FROM swarms WHERE then_id = ? AND ended_at IS NULL", (job_id,)
    ).fetchone()
    return None if row is None else (str(row[0]), int(row[1]), int(row[2]), decode_job(row[3]))


def expire_swarms(conn: sqlite3.Connection, before: float, limit: int) -> int:
    """Forget up to ``limit`` swarms that ended before ``before`` (Unix time), with their members'
    indices; return how many. A swarm whose follow-up is pending (awaited, or queued or running)
    stays: the follow-up reads its members' outcomes."""
    ids = [
        row[0]
        for row in conn.execute(
            "SELECT swarm_id FROM swarms s WHERE ended_at IS NOT NULL AND ended_at < ? "
            f"AND NOT ({_FOLLOW_UP_PENDING}) LIMIT ?",
            (before, limit),
        )
    ]
    if not ids:
        return 0
    marks = ",".join("?" * len(ids))
    conn.execute(f"DELETE FROM swarm_members WHERE swarm_id IN ({marks})", ids)
    return conn.execute(f"DELETE FROM swarms WHERE swarm_id IN ({marks})", ids).rowcount
