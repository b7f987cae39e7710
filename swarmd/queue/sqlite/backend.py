"""The local durable queue: one SQLite file (WAL) in the state directory.

Jobs are rows: ``ready``, ``delayed`` (not_before still ahead; kept out of the ready index, so a
backlog of retries never slows a reserve, and promoted when due), ``leased`` (a
worker runs them until ``lease_until``) or ``dead`` (dead letters). A finished job leaves the
table in the same transaction that writes its ledger entry. Reservations and commits are
batched: one transaction reserves many jobs; one transaction commits many outcomes.

All SQL runs on one thread per backend (`SqliteThread`); the methods here are what the
event loop awaits.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import msgspec
import structlog

from swarmd.errors import (
    BackendUnavailable,
    JobNotFound,
    JobValidationError,
    StateCorrupt,
    StateDirError,
    error_text,
)
from swarmd.ledger.chain import Anchor, StoredEntry, VerifyReport, verify
from swarmd.ledger.records import OutcomeRecord
from swarmd.ledger.sqlite import (
    append_records,
    append_unrecorded,
    archived_ids,
    entry_from_row,
    existing_indices,
    expire_archived_ids,
    forget_through,
    ledger_tail,
    read_anchor,
    read_entries,
)
from swarmd.model import Job, JobState, SwarmPlan, UpkeepStep, decode_job, decode_reserved, encode_job, new_job_id
from swarmd.queue.base import (
    Disposition,
    Finish,
    FinishReport,
    JobFilter,
    JobInfo,
    Reserved,
    SwarmProgress,
    UpkeepObserver,
    WakeReason,
    error_object,
)
from swarmd.queue.schedule_state import decode_state, encode_state
from swarmd.queue.sqlite.wake import SOCKET_NAME, WakeListener, wake
from swarmd.queue.sqlite.workflows import (
    archive_hold,
    awaiting,
    count_ended,
    expire_swarms,
    insert_jobs,
    register_swarms,
    swarm_outcomes,
    swarm_progress,
)
from swarmd.queue.waiting import Push, wait_for_entries
from swarmd.schedules import Schedule, ScheduleState
from swarmd.storage.gil_turns import short_gil_turns
from swarmd.storage.holder import daemon_holds
from swarmd.storage.horizon import DEFAULT_HORIZON
from swarmd.storage.sqlite import (
    VACUUM_PAGES,
    Durability,
    SqliteThread,
    StateConnection,
    checkpoint_passive,
    checkpoint_wal,
    connect,
    connect_aside,
    connect_readonly,
    free_pages,
    queue_writes,
    quick_check,
    transaction,
    vacuum_step,
)

T = TypeVar("T")

DB_NAME: Final = "swarmd.db"
#: Seconds between two checkpoints of the WAL aside (`SqliteBackend.checkpoint_aside`).
CHECKPOINT_EVERY: Final = 0.5
#: The WAL's pages past which a commit checkpoints it itself, with checkpoints aside (40 MB):
#: only if those fall far behind (a reader holding a snapshot for long, a stuck thread).
AUTOCHECKPOINT_BEHIND_PAGES: Final = 10_000
WRITE_LOCK_NAME: Final = "write.lock"
log = structlog.get_logger("swarmd.sqlite")
_JOB_COLUMNS: Final = "id, state, agent, gid, attempt, priority, not_before, swarm_id, error"
#: Primary SQLite result codes that say the file cannot be used right now, not that swarmd erred.
_UNAVAILABLE: Final = frozenset(
    {sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_CANTOPEN}
)
#: Seconds between a waiter's own looks at the ledger while the daemon pushes its commits.
PUSHED_BACKSTOP: Final = 60.0
#: Primary SQLite result codes that say the file itself is damaged, or no database at all.
_DAMAGED: Final = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


def _info(row: Sequence[Any], now: float) -> JobInfo:
    job_id, state, agent, gid, attempt, priority, not_before, swarm_id, error = row
    if state == JobState.DELAYED and not_before <= now:
        state = JobState.READY.value  # due, not yet promoted by a reserve
    return JobInfo(
        str(job_id),
        JobState(state),
        str(agent),
        str(gid),
        int(attempt),
        int(priority),
        float(not_before),
        swarm_id,
        error_object(error),
    )


def _where(where: JobFilter, state: str | None, now: float) -> tuple[str, tuple[Any, ...]]:
    """A WHERE clause (and its arguments) for the jobs ``where`` matches; a due delayed job
    counts as ready, as `_info` shows it."""
    clauses: list[str] = []
    args: list[Any] = []
    state = where.state or state
    if state == "ready":
        clauses.append("(state = 'ready' OR (state = 'delayed' AND not_before <= ?))")
        args.append(now)
    elif state == "delayed":
        clauses.append("state = 'delayed' AND not_before > ?")
        args.append(now)
    elif state is not None:
        clauses.append("state = ?")
        args.append(state)
    for column, value in (("agent", where.agent), ("gid", where.gid), ("swarm_id", where.swarm_id)):
        if value is not None:
            clauses.append(f"{column} = ?")
            args.append(value)
    return " AND ".join(clauses) or "1", tuple(args)


def _mark_keys_finished(conn: sqlite3.Connection, job_ids: Collection[str], now: float) -> None:
    """Inside the transaction that finishes jobs: their idempotency keys start to age (they
    expire ``result_ttl`` after ``finished_at``; see `SqliteBackend.expire_finished`)."""
    if job_ids:
        conn.execute(
            "UPDATE idempotency SET finished_at = ? WHERE job_id IN (SELECT value FROM json_each(?))",
            (now, msgspec.json.encode(list(job_ids)).decode()),
        )


def _placeholders(n: int) -> str:
    return ",".join("?" * n)


class SqliteBackend:
    """`QueueBackend` on one SQLite file.

    ``owner`` names this worker in the leases it takes (host, pid, and a random tag).
    """

    name = "sqlite"

    def __init__(
        self,
        state_dir: Path,
        durability: Durability = Durability.FULL,
        owner: str | None = None,
        *,
        inline: bool = False,
        check_integrity: bool = False,
        read_only: bool = False,
    ) -> None:
        self.state_dir = state_dir
        #: Run SQLite's quick_check at open (the daemon's start): a damaged file is refused.
        self.check_integrity = check_integrity
        #: Open the file read-only (operators' reading commands): nothing is created or written.
        self.read_only = read_only
        #: Where `wait_finished` learns of commits (the daemon's API socket); None: backstop only.
        self.push: Push | None = None
        self.path = state_dir / DB_NAME
        self.durability = durability
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self._conn: sqlite3.Connection | None = None
        #: ``inline``: statements run on the caller's thread (see `SqliteThread`).
        self._thread = SqliteThread(inline=inline)
        #: A second connection with a thread of its own, for what need not queue behind the hot
        #: path's commits: WAL checkpoints and long reads of the ledger (`_run_aside`).
        self._aside = SqliteThread("swarmd-sqlite-aside", inline=inline)
        self._aside_conn: sqlite3.Connection | None = None
        #: Checkpoint the WAL aside, every `CHECKPOINT_EVERY` seconds of writing, instead of
        #: inside the commit that crosses SQLite's autocheckpoint (`_checkpoint_when_due`): the
        #: daemon's backend, whose commits are the hot path's. Set before `open`.
        self.checkpoint_aside = False
        self._checkpointing: asyncio.Task[None] | None = None
        self._next_checkpoint = 0.0
        self._listener: WakeListener | None = None
        #: The wake socket `listen` binds in the state directory (a worker process binds its own,
        #: fed by the supervisor's relay: swarmd.queue.sqlite.wake).
        self.wake_socket = SOCKET_NAME
        #: Take turns with the other worker processes of one daemon on an flock before each
        #: write transaction (`swarmd.storage.sqlite.queue_writes`), instead of busy-sleeping.
        self.queue_writes = False
        #: Told of each housekeeping step and how long it held this backend's thread (see
        #: `swarmd.queue.base.QueueBackend.on_upkeep_step`); called on that thread.
        self.on_upkeep_step: UpkeepObserver | None = None

    # -- plumbing --------------------------------------------------------------------------
    async def open(self) -> None:
        if self.read_only:
            self._conn = await self._run(connect_readonly, self.path)
            return
        self._conn = await self._run(connect, self.path, self.durability)
        if self.queue_writes:
            queue_writes(self._conn, self.state_dir / WRITE_LOCK_NAME)
        if self.checkpoint_aside:  # SQLite checkpoints itself only if these fall far behind
            await self._run(self.conn.execute, f"PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_BEHIND_PAGES}")
        if self.check_integrity:
            problems = await self._run(quick_check, self.conn)
            if problems:
                raise StateCorrupt(str(self.path), "quick_check: " + "; ".join(problems[:3]))

    async def close(self) -> None:
        closer = getattr(self.push, "close", None)  # the push's connection to the daemon, if any
        if closer is not None:
            await closer()
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        self.checkpoint_aside = False  # a call ending during the close starts none
        if self._checkpointing is not None:
            await self._checkpointing  # one PASSIVE checkpoint: it waits for nobody
            self._checkpointing = None
        if self._aside_conn is not None:
            aside, self._aside_conn = self._aside_conn, None
            await self._aside.run(aside.close)
        self._aside.shutdown()
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await self._thread.run(conn.close)
            lock = getattr(conn, "write_lock", None)
            if lock is not None:
                os.close(lock)
        self._thread.shutdown()

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("backend is not open")
        return self._conn

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        result = await self._run_on(self._thread, fn, *args)
        if self.checkpoint_aside:
            self._checkpoint_when_due()
        return result

    def _checkpoint_when_due(self) -> None:
        """After a call on the backend's thread: start a PASSIVE checkpoint aside if the last
        one is `CHECKPOINT_EVERY` seconds old and done. SQLite would otherwise checkpoint inside
        the commit that takes the WAL past 1,000 pages, copying 4 MB and fsyncing the database
        while the hot path's commits queue behind it (30-50 ms); aside, they go on meanwhile.
        A PASSIVE checkpoint copies only the frames written since the last one."""
        now = time.monotonic()
        if now < self._next_checkpoint or (self._checkpointing is not None and not self._checkpointing.done()):
            return
        self._next_checkpoint = now + CHECKPOINT_EVERY
        self._checkpointing = asyncio.create_task(self._checkpoint_aside())

    async def _checkpoint_aside(self) -> None:
        try:
            await self._run_aside(checkpoint_passive)
        except Exception as exc:  # the next one tries again; SQLite's own stands behind it
            log.warning("wal_checkpoint_failed", error=error_text(exc))

    async def _run_aside(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, *args)`` on the second connection and its own thread (opened at first
        use; `swarmd.storage.sqlite.connect_aside`): it neither waits for the hot path's
        commits queued on the backend's thread nor holds them up, since SQLite's WAL lets
        readers and a checkpointer go on beside the writer. A read-only backend has no second
        connection: ``fn`` runs on its one connection."""
        if self.read_only:
            return await self._run(fn, self.conn, *args)
        if self._aside_conn is None:
            self._aside_conn = await self._run_on(self._aside, connect_aside, self.path)
        return await self._run_on(self._aside, fn, self._aside_conn, *args)

    async def _run_on(self, thread: SqliteThread, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await thread.run(functools.partial(fn, *args))
        except sqlite3.OperationalError as exc:
            # What the machine does to the file (a full disk, an I/O error, a lock held too
            # long) is the protocol's "unavailable right now": the worker pauses and says why.
            if exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_READONLY:
                raise StateDirError(str(self.state_dir), f"cannot write {self.path.name}: {exc}") from exc
            if exc.sqlite_errorcode & 0xFF in _UNAVAILABLE:
                raise BackendUnavailable(f"state database {self.path}: {exc} ({exc.sqlite_errorname})") from exc
            raise
        except sqlite3.DatabaseError as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF in _DAMAGED:
                raise StateCorrupt(str(self.path), str(exc)) from exc
            raise

    async def _upkeep(self, step: UpkeepStep, fn: Callable[..., T], *args: Any) -> T:
        """Run one housekeeping step as its own call on the thread (the hot path's calls queued
        meanwhile run before the next step), timed there: the time it holds the thread."""
        return await self._run(self._timed, step, fn, *args)

    def _timed(self, step: UpkeepStep, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` with short turns of the GIL (`short_gil_turns`) and tell `on_upkeep_step`
        how long it held the thread once it had the write lock: a wait for another writer
        before that (a producer's transaction, another worker's commit) holds up the hot path's
        own commits whether a step runs or not."""
        conn = self._conn
        if isinstance(conn, StateConnection):
            conn.locked_at = None
        started = time.perf_counter()
        try:
            with short_gil_turns():  # its statements take the GIL back from a busy loop sooner
                return fn(*args)
        finally:
            locked = getattr(conn, "locked_at", None)
            self._observe(step, time.perf_counter() - max(started, locked or started))

    def _observe(self, step: UpkeepStep, seconds: float) -> None:
        observer = self.on_upkeep_step
        if observer is not None:
            observer(step.value, seconds)

    # -- producers -------------------------------------------------------------------------
    async def submit(self, jobs: Sequence[Job], plans: Sequence[SwarmPlan] = ()) -> list[str]:
        ids = await self._run(self._submit, jobs, plans)
        wake(self.state_dir)
        return ids

    def _submit(self, jobs: Sequence[Job], plans: Sequence[SwarmPlan] = ()) -> list[str]:
        conn = self.conn
        now = time.time()
        ids: list[str] = []
        new: list[Job] = []
        with transaction(conn):
            for job in jobs:
                if job.idempotency_key is not None:
                    hit = conn.execute(
                        "SELECT job_id FROM idempotency WHERE key = ?", (job.idempotency_key,)
                    ).fetchone()
                    if hit is not None:
                        ids.append(str(hit[0]))
                        continue
                    conn.execute("INSERT INTO idempotency (key, job_id) VALUES (?, ?)", (job.idempotency_key, job.id))
                ids.append(job.id)
                new.append(job)
            recorded = existing_indices(conn, [job.id for job in new])
            if recorded:  # a finished job's id: running it again would write its ledger entry twice
                job_id = next(iter(recorded))
                raise JobValidationError("id", f"job {job_id} already finished (ledger index {recorded[job_id]})")
            archived = archived_ids(conn, [job.id for job in new], now)
            if archived:  # finished long ago: its entry is in the archive now
                raise JobValidationError("id", f"job {min(archived)} already finished (its ledger entry is archived)")
            insert_jobs(conn, new, now)
            register_swarms(conn, new, plans, now)
        return ids

    # -- the worker ------------------------------------------------------------------------
    async def reserve(self, limit: int, *, lease: float, exclude_agents: Collection[str] = ()) -> list[Reserved]:
        if limit <= 0:
            return []
        return await self._run(self._reserve, limit, lease, tuple(exclude_agents))

    def _reserve(self, limit: int, lease: float, exclude: tuple[str, ...]) -> list[Reserved]:
        now = time.time()
        skip = f" AND agent NOT IN ({_placeholders(len(exclude))})" if exclude else ""
        with transaction(self.conn, no_fsync=True) as conn:
            conn.execute("UPDATE jobs SET state = 'ready' WHERE state = 'delayed' AND not_before <= ?", (now,))
            rows = conn.execute(
                "UPDATE jobs SET state = 'leased', lease_until = ?, owner = ?, attempt = attempt + 1 "
                f"WHERE seq IN (SELECT seq FROM jobs WHERE state = 'ready'{skip} ORDER BY priority DESC, seq LIMIT ?) "
                "RETURNING priority, seq, id, attempt, gid, agent, body",
                (now + lease, self.owner, *exclude, limit),
            ).fetchall()
        rows.sort(key=lambda row: (-row[0], row[1]))
        reserved: list[Reserved] = []
        for _, _, job_id, attempt, gid, agent, body in rows:
            try:
                job = decode_reserved(body, attempt)
            except JobValidationError as exc:  # kept as stored, for its dead letter
                reserved.append(Reserved(job_id, None, attempt, str(exc), gid, agent, self._swarm_of(job_id)))
                continue
            if job.id != job_id:
                error = f"invalid job: id: body names {job.id!r}"
                reserved.append(Reserved(job_id, None, attempt, error, gid, agent, self._swarm_of(job_id)))
                continue
            reserved.append(Reserved(job.id, job, attempt, None, job.gid, job.agent))  # the job's strings, not copies
        return reserved

    def _swarm_of(self, job_id: str) -> str | None:
        """The swarm of a stored job, from its row (for an undecodable body)."""
        row = self.conn.execute("SELECT swarm_id FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    async def finish(self, items: Sequence[Finish]) -> FinishReport:
        report = await self._run(self._finish, items)
        if report.submitted:  # children and follow-ups are ready work, for this daemon or another
            wake(self.state_dir)
        return report

    def _finish(self, items: Sequence[Finish]) -> FinishReport:
        now = time.time()
        report = FinishReport()
        with transaction(self.conn) as conn:
            # A job's row leaves `jobs` (or turns dead) in the transaction that records it, so a
            # job still queued and not dead has no ledger entry yet: claiming its row tells which
            # outcomes are new without a separate look-up in the ledger.
            fresh = self._claim_final(conn, items, now)
            _mark_keys_finished(conn, fresh, now)
            records = [(item.job_id, item.record) for item in items if item.record is not None]
            new: dict[str, bytes] = {}
            for job_id, record in records:  # the first outcome of a job that ran twice wins
                if job_id in fresh and job_id not in new:
                    new[job_id] = record
            written = append_unrecorded(conn, list(new.items()))
            report.indices = dict(zip(new, written, strict=True))
            stale = [(job_id, record) for job_id, record in records if job_id not in fresh]
            if stale:  # an archived entry counts as recorded: it is not written again
                gone = archived_ids(conn, [job_id for job_id, _ in stale], now)
                stale = [(job_id, record) for job_id, record in stale if job_id not in gone]
            if stale:  # ran twice (a lease lost and taken over): keep the first entry
                report.indices.update(zip((job_id for job_id, _ in stale), append_records(conn, stale), strict=True))
            retry = [(item.not_before, now, item.job_id) for item in items if item.disposition is Disposition.RETRY]
            conn.executemany(
                "UPDATE jobs SET state = CASE WHEN ?1 > ?2 THEN 'delayed' ELSE 'ready' END, owner = NULL, "
                "lease_until = NULL, not_before = ?1 WHERE id = ?3 AND state = 'leased'",
                retry,
            )
            release = [(item.not_before, now, item.job_id) for item in items if item.disposition is Disposition.RELEASE]
            conn.executemany(
                "UPDATE jobs SET state = CASE WHEN ?1 > ?2 THEN 'delayed' ELSE 'ready' END, owner = NULL, "
                "lease_until = NULL, not_before = ?1, attempt = max(attempt - 1, 0) WHERE id = ?3 AND state = 'leased'",
                release,
            )
            if retry or release:  # a cancel requested while they ran wins over running them again
                self._settle_cancelled(conn, now, report)
            swarms = {item.cancel_swarm for item in items if item.cancel_swarm}
            for swarm_id in swarms:
                report.cancelled.extend(
                    self._cancel_where(conn, "swarm_id = ?", (swarm_id,), now, reason="fail_fast", report=report)
                )
            self._consequences(conn, items, report, now)
            if swarms or stale or not written:
                last, _ = ledger_tail(conn)
                report.ledger_index = last - 1 if last else None
            else:
                report.ledger_index = written[-1]
        return report

    def _consequences(
        self, conn: sqlite3.Connection, items: Sequence[Finish], report: FinishReport, now: float
    ) -> None:
        """Inside the finish transaction, after the ledger entries: the children of jobs recorded
        for the first time (``report.indices`` holds those, a job that ran twice keeps its first
        entry and its first children), and the count of the swarm members that ended."""
        children: list[Job] = []
        plans: list[SwarmPlan] = []
        ended: list[tuple[str, str, int]] = []
        first = report.indices
        seen: set[str] = set()
        for item in items:
            if item.record is None or item.job_id not in first or item.job_id in seen:
                continue
            seen.add(item.job_id)
            children.extend(item.children)
            plans.extend(item.plans)
            if item.swarm_id is not None:
                ended.append((item.job_id, item.swarm_id, first[item.job_id]))
        if children:
            insert_jobs(conn, children, now)
            register_swarms(conn, children, plans, now)
            report.submitted.extend(job.id for job in children)
        self._count_ended(conn, ended, report, now)

    def _count_ended(
        self, conn: sqlite3.Connection, ended: list[tuple[str, str, int]], report: FinishReport, now: float
    ) -> None:
        swarms_ended, follow_ups = count_ended(conn, ended, now)
        report.swarms_ended.extend(swarms_ended)
        report.submitted.extend(follow_ups)

    def _claim_final(self, conn: sqlite3.Connection, items: Sequence[Finish], now: float) -> set[str]:
        """Remove (DONE) or bury (DEAD) the rows of finished jobs; return the ids that were live."""
        done = [item.job_id for item in items if item.disposition is Disposition.DONE]
        fresh: set[str] = set()
        if done:
            fresh.update(
                str(row[0])
                for row in conn.execute(
                    "DELETE FROM jobs WHERE id IN (SELECT value FROM json_each(?)) AND state != 'dead' RETURNING id",
                    (msgspec.json.encode(done).decode(),),
                )
            )
        for item in items:
            if item.disposition is Disposition.DEAD:
                row = conn.execute(
                    "UPDATE jobs SET state = 'dead', owner = NULL, lease_until = NULL, error = ?, dead_at = ? "
                    "WHERE id = ? AND state != 'dead' RETURNING id",
                    (item.error, now, item.job_id),
                ).fetchone()
                if row is not None:
                    fresh.add(item.job_id)
        return fresh

    def _cancel_where(
        self,
        conn: sqlite3.Connection,
        where: str,
        args: Sequence[Any],
        now: float,
        reason: str,
        report: FinishReport | None = None,
    ) -> list[str]:
        """Inside a transaction: cancel queued jobs (ledger + delete), flag leased ones. Swarm
        members cancelled count as ended (into ``report``, when the caller keeps one)."""
        rows = conn.execute(f"SELECT id, gid, agent, attempt, swarm_id, state FROM jobs WHERE {where}", args).fetchall()
        queued = [row for row in rows if row[5] in (JobState.READY, JobState.DELAYED)]
        records = [
            (
                job_id,
                OutcomeRecord(
                    job_id=job_id,
                    gid=gid,
                    agent=agent,
                    outcome="cancelled",
                    attempt=attempt,
                    finished_at=now,
                    swarm_id=swarm_id,
                    error={"type": "Cancelled", "message": reason},
                ).encode(),
            )
            for job_id, gid, agent, attempt, swarm_id, _ in queued
        ]
        indices = append_records(conn, records)
        conn.executemany("DELETE FROM jobs WHERE id = ?", [(row[0],) for row in queued])
        ended = [(row[0], row[4], index) for row, index in zip(queued, indices, strict=True) if row[4] is not None]
        if ended:
            self._count_ended(conn, ended, report or FinishReport(), now)
        _mark_keys_finished(conn, [row[0] for row in queued], now)
        leased = [(row[0],) for row in rows if row[5] == JobState.LEASED]
        conn.executemany("UPDATE jobs SET cancel = 1 WHERE id = ?", leased)
        return [row[0] for row in queued] + [row[0] for row in leased]

    async def renew(self, job_ids: Collection[str], *, lease: float) -> None:
        await self._run(self._renew, lease)

    def _renew(self, lease: float) -> None:
        with transaction(self.conn, no_fsync=True) as conn:
            conn.execute(
                "UPDATE jobs SET lease_until = ? WHERE state = 'leased' AND owner = ?",
                (time.time() + lease, self.owner),
            )

    async def recover(self, *, all_leases: bool) -> int:
        return await self._run(self._recover, all_leases)

    def _recover(self, all_leases: bool) -> int:
        """Return leases to the queue: all of them at start-up (the state lock proves their holder
        is dead), else only expired leases of OTHER owners — with one daemon per SQLite file that
        is none, and a lease of our own that expired (renewal failed) belongs to a job still
        running here, which must not run twice."""
        now = time.time()
        with transaction(self.conn) as conn:
            cursor = conn.execute(
                "UPDATE jobs SET state = 'ready', owner = NULL, lease_until = NULL "
                "WHERE state = 'leased' AND (? OR (lease_until < ? AND owner != ?))",
                (all_leases, now, self.owner),
            )
            recovered = cursor.rowcount
            self._settle_cancelled(conn, now)
            return recovered

    def _settle_cancelled(self, conn: sqlite3.Connection, now: float, report: FinishReport | None = None) -> None:
        """Inside a transaction: queued jobs whose cancel was requested end cancelled now."""
        self._cancel_where(
            conn,
            "cancel = ? AND state IN ('ready', 'delayed')",
            (1,),
            now,
            reason="cancelled by request",
            report=report,
        )

    async def listen(self) -> None:
        listener = WakeListener(self.state_dir, self.wake_socket)
        if listener.start():
            self._listener = listener
        else:  # a state directory path too long for AF_UNIX: the poll interval bounds the delay
            log.warning("wake_socket_unavailable", path=str(listener.path), fallback="poll_interval")

    async def wait_for_work(self, timeout: float) -> set[WakeReason]:  # noqa: ASYNC109
        if self._listener is None:
            await asyncio.sleep(timeout)
            return set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listener.event.wait(), timeout)
        return self._listener.take()

    async def check_persistence(self) -> str | None:
        return None  # every commit is fsynced (or, with durability "normal", as documented)

    async def cancel_requested(self) -> list[str]:
        return await self._run(self._cancel_requested)

    def _cancel_requested(self) -> list[str]:
        rows = self.conn.execute(
            "SELECT id FROM jobs WHERE state = 'leased' AND owner = ? AND cancel = 1", (self.owner,)
        ).fetchall()
        return [str(row[0]) for row in rows]

    async def next_due(self) -> float | None:
        return await self._run(self._next_due)

    def _next_due(self) -> float | None:
        # A delayed job stays delayed until a reserve promotes it, so one that came due since the
        # last reserve is still found here (its time is past: the caller reserves at once).
        row = self.conn.execute("SELECT min(not_before) FROM jobs WHERE state = 'delayed'").fetchone()
        return None if row is None or row[0] is None else float(row[0])

    async def counts(self) -> dict[str, int]:
        return await self._run(self._counts)

    def _counts(self) -> dict[str, int]:
        now = time.time()
        conn = self.conn
        ready = conn.execute("SELECT count(*) FROM jobs WHERE state = 'ready'").fetchone()[0]
        waiting, due = conn.execute(
            "SELECT count(*), coalesce(sum(not_before <= ?), 0) FROM jobs WHERE state = 'delayed'", (now,)
        ).fetchone()
        leased = conn.execute("SELECT count(*) FROM jobs WHERE state = 'leased'").fetchone()[0]
        dead = conn.execute("SELECT count(*) FROM jobs WHERE state = 'dead'").fetchone()[0]
        # A delayed job that came due but no reserve has promoted yet is ready in all but name.
        return {
            "ready": int(ready) + int(due),
            "delayed": int(waiting) - int(due),
            "leased": int(leased),
            "dead": int(dead),
        }

    async def publish_agents(self, names: Sequence[str]) -> None:
        await self._run(self._publish_agents, sorted(set(names)))

    def _publish_agents(self, names: list[str]) -> None:
        with transaction(self.conn) as conn:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('agents', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (msgspec.json.encode(names).decode(),),
            )

    async def publish_holds(self, holds: Mapping[str, str]) -> None:
        await self._run(self._publish_meta, "holds", msgspec.json.encode(dict(holds)).decode())

    def _publish_meta(self, key: str, value: str) -> None:
        with transaction(self.conn, no_fsync=True) as conn:  # advisory: lost to a power cut, republished
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    async def holds(self) -> dict[str, str]:
        return await self._run(self._holds)

    def _holds(self) -> dict[str, str]:
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'holds'").fetchone()
        return {} if row is None else {str(k): str(v) for k, v in msgspec.json.decode(row[0]).items()}

    async def published_agents(self) -> list[str] | None:
        return await self._run(self._published_agents)

    def _published_agents(self) -> list[str] | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'agents'").fetchone()
        return None if row is None else [str(name) for name in msgspec.json.decode(row[0])]

    async def daemon_serving(self) -> bool:
        return await self._run(daemon_holds, self.state_dir)

    # -- waiters ---------------------------------------------------------------------------
    async def wait_finished(
        self,
        job_ids: Collection[str],
        timeout: float | None,  # noqa: ASYNC109 - a bound, in seconds
        *,
        backstop: float = 1.0,
        every: bool = False,
    ) -> dict[str, StoredEntry]:
        """See `QueueBackend.wait_finished`. SQLite has no notifications of its own: the push
        comes from the daemon, through its API socket (`push`, set by the client); without one,
        the backstop look is the only wake-up."""
        wanted = list(job_ids)
        push = self.push

        async def notified(seconds: float) -> set[str] | None:
            if push is None:
                await asyncio.sleep(seconds)
                return set()
            return await push(wanted, seconds)

        # With a push, the daemon looks at the ledger when a wait registers, so no commit is
        # missed: the client's own look is only for a daemon that went away (the push then
        # returns None at once), and a wait costs the daemon one request a minute, not a second.
        if push is not None:
            backstop = max(backstop, PUSHED_BACKSTOP)
        return await wait_for_entries(self._entries_of, wanted, timeout, backstop, notified, every=every)

    async def ledger_entries_of(self, job_ids: Sequence[str]) -> list[StoredEntry]:
        return await self._entries_of(list(job_ids))

    async def _entries_of(self, job_ids: list[str]) -> list[StoredEntry]:
        return await self._run(self._select_entries, job_ids)

    def _select_entries(self, job_ids: list[str]) -> list[StoredEntry]:
        entries: list[StoredEntry] = []
        for start in range(0, len(job_ids), 500):
            chunk = job_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(
                f"SELECT idx, job_id, prev_hash, hash, record FROM ledger WHERE job_id IN ({marks})", chunk
            )
            entries.extend(entry_from_row(row) for row in rows)
        return sorted(entries, key=lambda entry: entry.index)

    # -- workflows ---------------------------------------------------------------------------
    async def swarm_progress(self, swarm_id: str) -> SwarmProgress | None:
        found = await self._run(swarm_progress, self.conn, swarm_id)
        return None if found is None else SwarmProgress(swarm_id, *found)

    async def swarm_outcomes(self, swarm_id: str) -> list[StoredEntry]:
        return await self._run(swarm_outcomes, self.conn, swarm_id)

    # -- operators -------------------------------------------------------------------------
    async def status(self, job_id: str) -> JobInfo:
        return await self._run(self._status, job_id)

    def _status(self, job_id: str) -> JobInfo:
        # A job only moves forward, each step in one transaction, perhaps of another process:
        # awaiting (a follow-up) → queued (its row) → recorded (its ledger entry). Looking in
        # that order finds a job that moves between two looks; the reverse order could miss it.
        follow_up = awaiting(self.conn, job_id)
        if follow_up is not None:
            swarm_id, size, ended, job = follow_up
            return JobInfo.awaiting(job, swarm_id, size, ended)
        row = self.conn.execute(f"SELECT {_JOB_COLUMNS}, body FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is not None:
            info = self._with_entries([_info(row[:-1], time.time())])[0]
            with contextlib.suppress(JobValidationError):  # an undecodable job has no family to show
                job = decode_job(row[-1])
                info.parent_id, info.follows = job.parent_id, job.follows
            return info
        entry = self.conn.execute(
            "SELECT idx, job_id, prev_hash, hash, record FROM ledger WHERE job_id = ?", (job_id,)
        ).fetchone()
        if entry is not None:
            return JobInfo.from_ledger(entry_from_row(entry))
        raise JobNotFound(f"job {job_id}")

    async def swarm_status(self, swarm_id: str) -> list[JobInfo]:
        return await self._run(self._swarm_status, swarm_id)

    def _swarm_status(self, swarm_id: str) -> list[JobInfo]:
        now = time.time()
        infos = [
            _info(row, now)
            for row in self.conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE swarm_id = ? ORDER BY seq", (swarm_id,)
            )
        ]
        queued = {info.job_id for info in infos}
        for row in self.conn.execute(
            "SELECT idx, job_id, prev_hash, hash, record FROM ledger "
            "WHERE job_id IN (SELECT job_id FROM ledger WHERE json_extract(record, '$.swarm_id') = ?) ORDER BY idx",
            (swarm_id,),
        ):
            if row[1] in queued:
                continue  # a dead letter: its row (state dead) stands for it, as in `status`
            infos.append(JobInfo.from_ledger(entry_from_row(row)))
        if not infos:
            raise JobNotFound(f"swarm {swarm_id}")
        return self._with_entries(infos)

    def _with_entries(self, infos: list[JobInfo]) -> list[JobInfo]:
        """Fill the outcome and ledger index of the dead letters among ``infos`` from the ledger
        entry their death wrote (in the same transaction that buried them)."""
        dead = {info.job_id: info for info in infos if info.state == JobState.DEAD and info.ledger_index is None}
        if dead:
            for row in self.conn.execute(
                "SELECT idx, job_id, prev_hash, hash, record FROM ledger "
                "WHERE job_id IN (SELECT value FROM json_each(?))",
                (msgspec.json.encode(list(dead)).decode(),),
            ):
                dead[row[1]].with_entry(entry_from_row(row))
        return infos

    async def list_jobs(self, state: str | None, limit: int, where: JobFilter | None = None) -> list[JobInfo]:
        return await self._run(self._list_jobs, state, limit, where)

    def _list_jobs(self, state: str | None, limit: int, where: JobFilter | None = None) -> list[JobInfo]:
        now = time.time()
        clause, args = _where(where or JobFilter(state=state), state, now)
        sql = f"SELECT {_JOB_COLUMNS} FROM jobs WHERE {clause} ORDER BY priority DESC, seq LIMIT ?"
        return self._with_entries([_info(row, now) for row in self.conn.execute(sql, (*args, limit))])

    async def count_jobs(self, where: JobFilter) -> int:
        return await self._run(self._count_jobs, where)

    def _count_jobs(self, where: JobFilter) -> int:
        clause, args = _where(where, None, time.time())
        return int(self.conn.execute(f"SELECT count(*) FROM jobs WHERE {clause}", args).fetchone()[0])

    async def cancel_matching(self, where: JobFilter) -> list[str]:
        ids = await self._run(self._cancel_matching, where)
        if ids:
            wake(self.state_dir, WakeReason.CANCEL)
            wake(self.state_dir)  # a cancelled swarm member may have been its last: a follow-up is due
        return ids

    def _cancel_matching(self, where: JobFilter) -> list[str]:
        now = time.time()
        clause, args = _where(where, None, now)
        with transaction(self.conn) as conn:
            return self._cancel_where(
                conn, f"state != 'dead' AND {clause} ORDER BY seq", args, now, "cancelled by request"
            )

    async def cancel(self, job_id: str | None = None, swarm_id: str | None = None) -> list[str]:
        ids = await self._run(self._cancel, job_id, swarm_id)
        wake(self.state_dir, WakeReason.CANCEL)
        wake(self.state_dir)  # a cancelled swarm member may have been its last: a follow-up is due
        return ids

    def _cancel(self, job_id: str | None, swarm_id: str | None) -> list[str]:
        where, value = ("id = ?", job_id) if job_id is not None else ("swarm_id = ?", swarm_id)
        if value is None:
            raise ValueError("cancel needs a job id or a swarm id")
        with transaction(self.conn) as conn:
            affected = self._cancel_where(conn, where, (value,), time.time(), reason="cancelled by request")
            if not affected:
                known = (
                    conn.execute(
                        "SELECT 1 FROM ledger WHERE "
                        + ("job_id = ?" if job_id else "json_extract(record, '$.swarm_id') = ?"),
                        (value,),
                    ).fetchone()
                    or conn.execute(f"SELECT 1 FROM jobs WHERE {where}", (value,)).fetchone()
                )
                if known is None:
                    raise JobNotFound(f"{'job' if job_id else 'swarm'} {value}")
        return affected

    async def ledger_entries(self, start: int = 0, limit: int | None = None) -> list[StoredEntry]:
        # Aside: reading a chunk to archive (5,000 entries) took ~33 ms, which the hot path's
        # commits queued behind on the backend's thread.
        return await self._run_aside(self._ledger_entries, start, limit)

    @staticmethod
    def _ledger_entries(conn: sqlite3.Connection, start: int, limit: int | None) -> list[StoredEntry]:
        entries = read_entries(conn, start, batch=5000 if limit is None else max(1, min(limit, 5000)))
        if limit is None:
            return list(entries)
        return [entry for _, entry in zip(range(limit), entries, strict=False)]

    async def ledger_tail(self, n: int) -> list[StoredEntry]:
        return await self._run(self._ledger_tail, n)

    def _ledger_tail(self, n: int) -> list[StoredEntry]:
        next_index, _ = ledger_tail(self.conn)
        return self._ledger_entries(self.conn, max(0, next_index - n), n)

    async def verify(self) -> VerifyReport:
        return await self._run(lambda: verify(read_entries(self.conn), read_anchor(self.conn)))

    async def dead_letters(self, limit: int) -> list[JobInfo]:
        return await self._list_jobs_dead(limit)

    async def _list_jobs_dead(self, limit: int) -> list[JobInfo]:
        return await self._run(self._list_jobs, "dead", limit)

    async def requeue(self, job_id: str | None, *, all_dead: bool = False) -> list[tuple[str, str]]:
        pairs = await self._run(self._requeue, job_id, all_dead)
        if pairs:
            wake(self.state_dir)
        return pairs

    def _requeue(self, job_id: str | None, all_dead: bool) -> list[tuple[str, str]]:
        now = time.time()
        with transaction(self.conn) as conn:
            if all_dead:
                rows = conn.execute("SELECT id, body FROM jobs WHERE state = 'dead' ORDER BY seq").fetchall()
            else:
                rows = conn.execute("SELECT id, body FROM jobs WHERE state = 'dead' AND id = ?", (job_id,)).fetchall()
                if not rows:
                    raise JobNotFound(f"dead letter {job_id}")
            pairs: list[tuple[str, str]] = []
            for old_id, body in rows:
                old = decode_job(body)
                new = msgspec.structs.replace(
                    old, id=new_job_id(), attempt=0, not_before=0.0, enqueued_at=now, idempotency_key=None
                )
                conn.execute(
                    "INSERT INTO jobs (id, agent, gid, priority, not_before, state, attempt, swarm_id, body) "
                    "VALUES (?, ?, ?, ?, 0, 'ready', 0, ?, ?)",
                    (new.id, new.agent, new.gid, new.priority, new.swarm_id, encode_job(new)),
                )
                conn.execute("DELETE FROM jobs WHERE id = ?", (old_id,))
                pairs.append((str(old_id), new.id))
        return pairs

    # -- bounded state ---------------------------------------------------------------------
    async def expire_finished(self, older_than: float, limit: int) -> int:
        """Forget up to ``limit`` idempotency keys of jobs that finished more than ``older_than``
        seconds ago, and up to ``limit`` swarms that ended as long ago (their count and, with a
        follow-up, their members' indices), in one short transaction; return how many. A swarm
        whose follow-up is still awaited has not ended, so it is never forgotten. Results are
        the ledger's (its own retention)."""
        return await self._upkeep(UpkeepStep.EXPIRE, self._expire_finished, time.time() - older_than, limit)

    def _expire_finished(self, before: float, limit: int) -> int:
        with transaction(self.conn, no_fsync=True) as conn:  # lost to a power cut: done again
            keys = conn.execute(
                "DELETE FROM idempotency WHERE rowid IN "
                "(SELECT rowid FROM idempotency WHERE finished_at < ? ORDER BY finished_at LIMIT ?)",
                (before, limit),
            ).rowcount
            return keys + expire_swarms(conn, before, limit)

    async def give_back_space(self) -> bool:
        """After large deletes: checkpoint the WAL without waiting for anyone (PASSIVE), then,
        if that copied every frame, truncate it (quick: nothing is left to copy). Returns
        whether the WAL was truncated; a writer or a reader that came since makes it wait for
        the next call, never this one (`swarmd.storage.sqlite.checkpoint_wal`).

        It runs on a connection and thread of its own (`_run_aside`): the copy and
        its fsync hold no commit of the hot path, which goes on writing the WAL meanwhile. Its
        ``wal_checkpoint`` time in `on_upkeep_step` is that thread's, not the hot path's."""
        started = time.perf_counter()
        try:
            return await self._run_aside(checkpoint_wal)
        finally:
            self._observe(UpkeepStep.WAL_CHECKPOINT, time.perf_counter() - started)

    async def purge_dead(self, older_than: float) -> int:
        return await self._upkeep(UpkeepStep.PURGE_DEAD, self._purge_dead, older_than)

    def _purge_dead(self, older_than: float) -> int:
        with transaction(self.conn) as conn:
            return conn.execute(
                "DELETE FROM jobs WHERE state = 'dead' AND dead_at <= ?", (time.time() - older_than,)
            ).rowcount

    # -- schedules: one row of `meta` per schedule, key ``schedule:<name>`` -----------------
    async def publish_schedules(self, schedules: Sequence[Schedule]) -> None:
        await self._run(self._publish_schedules, list(schedules))

    def _publish_schedules(self, schedules: list[Schedule]) -> None:
        published = {schedule.name: schedule for schedule in schedules}
        with transaction(self.conn) as conn:
            for known in self._schedule_states():
                if known.name not in published and known.schedule is not None:  # no longer fired: ticks kept
                    self._put_schedule_state(conn, ScheduleState(known.name, None, known.last_tick, known.last_job))
            for schedule in schedules:
                known = self._schedule_state(conn, schedule.name)
                state = ScheduleState(schedule.name, schedule, known.last_tick, known.last_job)
                self._put_schedule_state(conn, state)

    async def record_tick(self, name: str, tick: float, job_id: str) -> None:
        await self._run(self._record_tick, name, tick, job_id)

    def _record_tick(self, name: str, tick: float, job_id: str) -> None:
        with transaction(self.conn) as conn:
            known = self._schedule_state(conn, name)
            if known.last_tick is None or tick > known.last_tick:
                self._put_schedule_state(conn, ScheduleState(name, known.schedule, tick, job_id))

    async def schedule_states(self) -> list[ScheduleState]:
        return await self._run(self._schedule_states)

    def _schedule_states(self) -> list[ScheduleState]:
        rows = self.conn.execute(
            "SELECT key, value FROM meta WHERE key >= 'schedule:' AND key < 'schedule;' ORDER BY key"
        ).fetchall()
        return [decode_state(str(key).removeprefix("schedule:"), value) for key, value in rows]

    @staticmethod
    def _schedule_state(conn: sqlite3.Connection, name: str) -> ScheduleState:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (f"schedule:{name}",)).fetchone()
        return ScheduleState(name) if row is None else decode_state(name, row[0])

    @staticmethod
    def _put_schedule_state(conn: sqlite3.Connection, state: ScheduleState) -> None:
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (f"schedule:{state.name}", encode_state(state)),
        )

    # -- ledger archive --------------------------------------------------------------------
    async def ledger_anchor(self) -> Anchor | None:
        return await self._run(read_anchor, self.conn)

    async def forget_ledger(
        self,
        through: int,
        expected: Anchor | None,
        *,
        remember_for: float = DEFAULT_HORIZON,
        now: float | None = None,
    ) -> Anchor:
        when = time.time() if now is None else now
        return await self._upkeep(UpkeepStep.FORGET, self._forget_ledger, through, expected, remember_for, when)

    def _forget_ledger(self, through: int, expected: Anchor | None, remember_for: float, now: float) -> Anchor:
        # No fsync of its own: a step lost to a power cut leaves its entries live and the anchor
        # where it was, which the next archive takes up (the segment is durable before this
        # step; see swarmd.queue.archiving); the next durable commit syncs it anyway.
        with transaction(self.conn, no_fsync=True) as conn:
            return forget_through(conn, through, expected, remember_for=remember_for, now=now)

    async def archive_hold(self) -> int | None:
        return await self._run(archive_hold, self.conn)

    async def archived_ids(self, job_ids: Sequence[str], *, now: float | None = None) -> set[str]:
        return await self._run(archived_ids, self.conn, list(job_ids), time.time() if now is None else now)

    async def expire_archived_ids(self, limit: int, *, now: float | None = None) -> int:
        """Delete at most ``limit`` rows of ``archived_ids`` past their horizon, oldest first,
        in one short transaction (a range of the primary key); return how many."""
        when = time.time() if now is None else now
        return await self._upkeep(UpkeepStep.EXPIRE_ARCHIVED_IDS, self._expire_archived_ids, when, limit)

    def _expire_archived_ids(self, now: float, limit: int) -> int:
        with transaction(self.conn, no_fsync=True) as conn:  # lost to a power cut: done again
            return expire_archived_ids(conn, now, limit)

    async def reclaim_space(self) -> None:
        """Give the pages freed by archiving back, one incremental-vacuum step of at most
        `swarmd.storage.sqlite.VACUUM_PAGES` pages per call on the thread (so that the hot path's
        commits queued meanwhile go between two steps), then checkpoint the WAL as
        `give_back_space` does: never waiting on a reader."""
        # Bounded by the pages free now: the hot path's own deletes free pages between steps.
        steps = -(-await self._run(free_pages, self.conn) // VACUUM_PAGES)
        for _ in range(steps):
            await self._upkeep(UpkeepStep.VACUUM, vacuum_step, self.conn, VACUUM_PAGES)
        await self.give_back_space()
