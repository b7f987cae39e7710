"""The queue backend protocol: what the worker, the daemon and the client need of a queue.

Two implementations: the local SQLite file (`swarmd.queue.sqlite`, the embedded default) and
Redis Streams (`swarmd.queue.redis`, several daemons on several hosts). A backend never
imports the worker or the daemon.

The protocol keeps the guarantees in the backend: `finish` writes each final outcome's
ledger entry and removes the job's lease in ONE atomic step (a transaction, a script), and
the ledger holds at most one entry per job id however often a job ran.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

import msgspec

from swarmd.ledger.chain import Anchor, StoredEntry, VerifyReport
from swarmd.model import Job, JobState, SwarmPlan
from swarmd.schedules import Schedule, ScheduleState
from swarmd.storage.horizon import DEFAULT_HORIZON


@dataclass(slots=True)
class Reserved:
    """A job the worker now holds under a lease."""

    job_id: str
    #: The decoded job, or None if the stored job could not be decoded (see `error`).
    job: Job | None
    #: Attempts started, this one included.
    attempt: int
    #: Why the stored job is undecodable, when `job` is None.
    error: str | None = None
    #: The gid and agent as stored, for the ledger entry of an undecodable job.
    gid: str = ""
    agent: str = ""
    #: The swarm an undecodable job belongs to, as stored (None for a decodable job: see
    #: ``job.swarm_id``): its dead letter still counts as the member's end, so that the swarm
    #: ends and its follow-up is submitted.
    swarm_id: str | None = None
    #: Backend-specific handle (a stream entry id for Redis).
    handle: Any = None


class WakeReason(enum.StrEnum):
    """Why `QueueBackend.wait_for_work` returned: what may have arrived since the last call.

    On the wire (a wake-up datagram, a field of the Redis ``wake`` stream) a reason is its
    value's one byte; `from_wire` reads it back.
    """

    #: Jobs may be ready to reserve (a submit, a requeue, a recovered lease).
    WORK = "w"
    #: Someone asked to cancel a job a worker may be running.
    CANCEL = "c"

    @classmethod
    def from_wire(cls, data: bytes) -> WakeReason:
        """The reason a wake-up carries; an unknown byte counts as work (the worker looks again)."""
        return cls.CANCEL if data == b"c" else cls.WORK


class Disposition(enum.Enum):
    """What `finish` does with a job."""

    #: Final: write the ledger entry, remove the job from the queue.
    DONE = "done"
    #: Final: write the ledger entry, keep the job in the dead-letter queue.
    DEAD = "dead"
    #: Run again at `not_before`; the attempt counts.
    RETRY = "retry"
    #: Give the job back at `not_before` without spending the attempt (breaker open, drain).
    RELEASE = "release"


@dataclass(slots=True)
class Finish:
    """The end of one reservation."""

    job_id: str
    disposition: Disposition
    #: Canonical ledger record (for DONE and DEAD).
    record: bytes | None = None
    not_before: float = 0.0
    #: Reason kept with a dead letter (JSON text).
    error: str | None = None
    #: Fail-fast: cancel the queued and running members of this swarm in the same commit.
    cancel_swarm: str | None = None
    handle: Any = None
    #: The swarm the job belongs to and the final outcome its record carries (DONE and DEAD):
    #: the commit counts the member as ended, and submits the swarm's follow-up with its last.
    swarm_id: str | None = None
    outcome: str | None = None
    #: Jobs the handler submitted (``ctx.submit``), and the follow-ups of swarms among them:
    #: written by the commit that records this job's outcome for the first time, never by another.
    children: Sequence[Job] = ()
    plans: Sequence[SwarmPlan] = ()


@dataclass(slots=True)
class FinishReport:
    """What a `finish` committed."""

    #: Ledger index per finished job id (DONE and DEAD only).
    indices: dict[str, int] = field(default_factory=dict)
    #: Jobs cancelled while still queued, because their fail-fast swarm failed.
    cancelled: list[str] = field(default_factory=list)
    #: Last ledger index after the commit (None: ledger empty).
    ledger_index: int | None = None
    #: Swarms whose last member this commit recorded.
    swarms_ended: list[str] = field(default_factory=list)
    #: Jobs this commit submitted: children of the jobs it finished, follow-ups of the swarms it ended.
    submitted: list[str] = field(default_factory=list)


@dataclass(slots=True)
class SwarmProgress:
    """How far a swarm is: members ended of its size, and its follow-up (if it has one)."""

    swarm_id: str
    size: int
    ended: int
    follow_up: str | None = None


@dataclass(slots=True)
class JobInfo:
    """Where a job is: in the queue (state) or finished (its ledger entry)."""

    job_id: str
    state: JobState
    agent: str
    gid: str
    attempt: int
    priority: int = 0
    not_before: float = 0.0
    swarm_id: str | None = None
    #: Why the job failed or died, as recorded (``{"type": ..., "message": ...}``); None if it did not.
    error: dict[str, Any] | None = None
    outcome: str | None = None
    ledger_index: int | None = None
    #: Why a ready job is not starting, as the daemon published it (an open circuit, an agent it
    #: does not load); None when nothing holds it back.
    waiting: str | None = None
    #: The identity check's finding on a finished job (see `swarmd.identity`); None: it held.
    identity_violation: str | None = None
    #: What the handler returned (JSON data), for a job that succeeded.
    result: Any = None
    #: The job whose handler submitted this one (None: a producer's job).
    parent_id: str | None = None
    #: The jobs this job's handler submitted (as its ledger entry lists them).
    children: list[str] | None = None
    #: The swarm this job is the follow-up of.
    follows: str | None = None

    @classmethod
    def from_ledger(cls, entry: StoredEntry) -> JobInfo:
        """A finished job, as its ledger entry tells."""
        record = entry.decoded()
        error = record.get("error")
        return cls(
            job_id=str(entry.job_id),
            state=JobState.DONE,
            agent=str(record.get("agent", "")),
            gid=str(record.get("agent_gid", "")),
            attempt=int(record.get("attempt", 0)),
            swarm_id=record.get("swarm_id"),
            error=error_object(error),
            outcome=record.get("outcome"),
            ledger_index=entry.index,
            identity_violation=record.get("identity_violation"),
            result=record.get("result"),
            parent_id=record.get("parent_id"),
            children=record.get("children"),
            follows=record.get("follows"),
        )

    @classmethod
    def awaiting(cls, follow_up: Job, swarm_id: str, size: int, ended: int) -> JobInfo:
        """A swarm's follow-up that waits for the swarm to end (it is not submitted yet)."""
        return cls(
            job_id=follow_up.id,
            state=JobState.AWAITING,
            agent=follow_up.agent,
            gid=follow_up.gid,
            attempt=0,
            priority=follow_up.priority,
            waiting=f"swarm {swarm_id}: {ended} of {size} members ended",
            parent_id=follow_up.parent_id,
            follows=swarm_id,
        )

    def with_entry(self, entry: StoredEntry) -> JobInfo:
        """This queued job (a dead letter) with the outcome and index of its ledger entry."""
        self.outcome = entry.decoded().get("outcome")
        self.ledger_index = entry.index
        return self

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


def error_object(error: Any) -> dict[str, Any] | None:
    """A recorded error as an object: stored JSON text (a dead letter's reason) is decoded; text
    that is not a JSON object, or any other value, becomes ``{"message": ...}``."""
    if error is None or error == "":
        return None
    if isinstance(error, dict):
        return error
    if isinstance(error, bytes | str):
        try:
            decoded = msgspec.json.decode(error)
        except msgspec.DecodeError:
            decoded = None
        if isinstance(decoded, dict):
            return decoded
        return {"message": error.decode(errors="replace") if isinstance(error, bytes) else error}
    return {"message": str(error)}


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Which queued jobs an operator means (``swarmd jobs``, a bulk ``swarmd cancel``): every
    field that is set must match; none set means every queued job."""

    state: str | None = None
    agent: str | None = None
    gid: str | None = None
    swarm_id: str | None = None


#: Told of each housekeeping step a backend ran (`QueueBackend.on_upkeep_step`): its name (a
#: `swarmd.model.UpkeepStep` value) and the seconds it held the backend.
UpkeepObserver: TypeAlias = Callable[[str, float], None]


class QueueBackend(Protocol):
    """The seam between the queue and everything above it."""

    name: str
    #: Called after each housekeeping step (`swarmd.model.UpkeepStep`: forget, vacuum,
    #: wal_checkpoint, expire, purge_dead) with the seconds it held the backend: timed on the
    #: SQLite backend's own thread from when it had the write lock (the hold, not the time queued
    #: for the thread or waiting for another writer; wal_checkpoint runs on a thread of its own),
    #: around the script call on Redis. The daemon wires it to ``swarmd_state_upkeep_step_seconds``; None: untimed.
    #: On SQLite it runs on the backend's thread: keep it short and thread-safe.
    on_upkeep_step: UpkeepObserver | None

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    # -- producers -------------------------------------------------------------------------
    async def submit(self, jobs: Sequence[Job], plans: Sequence[SwarmPlan] = ()) -> list[str]:
        """Store jobs durably; return their ids (an idempotency key already used gives the
        id of the job it first made). ``plans``: swarms among them that have a follow-up."""
        ...

    # -- the worker ------------------------------------------------------------------------
    async def reserve(self, limit: int, *, lease: float, exclude_agents: Collection[str] = ()) -> list[Reserved]:
        """Lease up to ``limit`` ready jobs, highest priority first, then oldest."""
        ...

    async def finish(self, items: Sequence[Finish]) -> FinishReport:
        """Commit a batch of outcomes atomically (ledger entries and lease removals)."""
        ...

    async def renew(self, job_ids: Collection[str], *, lease: float) -> None:
        """Extend the leases of jobs this worker still runs."""
        ...

    async def recover(self, *, all_leases: bool) -> int:
        """Return expired leases (all leases, at a start under the state lock) to the queue."""
        ...

    async def listen(self) -> None:
        """Start receiving wake-ups (submits, cancel requests): the daemon calls this once."""
        ...

    async def wait_for_work(self, timeout: float) -> set[WakeReason]:  # noqa: ASYNC109 - a bound, in seconds
        """Block until work may have arrived, or ``timeout`` seconds pass; return why (empty:
        the time ran out). Cheap to cancel."""
        ...

    async def check_persistence(self) -> str | None:
        """Why acknowledged work could be lost on this store (None: it would not)."""
        ...

    async def cancel_requested(self) -> list[str]:
        """Jobs this worker runs whose cancellation was requested."""
        ...

    async def next_due(self) -> float | None:
        """Unix time at which the earliest delayed job becomes ready (None: none delayed)."""
        ...

    async def counts(self) -> dict[str, int]:
        """Jobs by state: ready, delayed, leased, dead."""
        ...

    async def publish_agents(self, names: Sequence[str]) -> None:
        """Record the agent names a daemon serves, so producers can refuse unknown ones."""
        ...

    async def publish_holds(self, holds: Mapping[str, str]) -> None:
        """Record why the publishing daemon holds back the ready jobs of some agents (agent ->
        reason), replacing what it published before; the operators' reads show it."""
        ...

    async def holds(self) -> dict[str, str]:
        """What `publish_holds` recorded last (empty: nothing held back)."""
        ...

    async def published_agents(self) -> list[str] | None:
        """The agent names daemons published (None: no daemon has published any yet)."""
        ...

    async def daemon_serving(self) -> bool:
        """Whether a daemon serves this queue, as far as the store can tell (SQLite: one holds the
        state directory's lock now; Redis: one has published its agents there)."""
        ...

    # -- waiters ---------------------------------------------------------------------------
    async def ledger_entries_of(self, job_ids: Sequence[str]) -> list[StoredEntry]:
        """The ledger entries of those of ``job_ids`` that have one (finished jobs)."""
        ...

    async def wait_finished(
        self,
        job_ids: Collection[str],
        timeout: float | None,  # noqa: ASYNC109 - a bound, in seconds
        *,
        backstop: float = 1.0,
        every: bool = False,
    ) -> dict[str, StoredEntry]:
        """The ledger entries of those of ``job_ids`` that have finished, as soon as one has
        (``every``: once all have), at once if that is so already; when ``timeout`` seconds pass
        first (None: no limit), those found by then, possibly none.
        Woken by the commit of an outcome, not by polling: ``backstop`` is the slow look at the
        ledger for a lost notification. Leaves nothing behind when cancelled."""
        ...

    # -- workflows ---------------------------------------------------------------------------
    async def swarm_progress(self, swarm_id: str) -> SwarmProgress | None:
        """How many of the swarm's members have ended, and its follow-up (None: the store keeps
        no count of this swarm: submitted before state version 3, or expired)."""
        ...

    async def swarm_outcomes(self, swarm_id: str) -> list[StoredEntry]:
        """The ledger entries of the swarm's members that have ended, in ledger order."""
        ...

    # -- operators -------------------------------------------------------------------------
    async def status(self, job_id: str) -> JobInfo: ...

    async def swarm_status(self, swarm_id: str) -> list[JobInfo]: ...

    async def list_jobs(self, state: str | None, limit: int, where: JobFilter | None = None) -> list[JobInfo]:
        """Up to ``limit`` queued jobs of ``state`` (or all) matching ``where``, highest priority
        first, then oldest (``where.state``, if set, wins over ``state``)."""
        ...

    async def count_jobs(self, where: JobFilter) -> int:
        """How many queued jobs match ``where`` (what `list_jobs` would list without a limit)."""
        ...

    async def cancel_matching(self, where: JobFilter) -> list[str]:
        """`cancel` every queued and running job that matches ``where`` (never a dead letter);
        return the ids affected."""
        ...

    async def cancel(self, job_id: str | None = None, swarm_id: str | None = None) -> list[str]:
        """Cancel queued jobs now (ledger: cancelled) and ask the daemon to cancel running
        ones; return the ids affected."""
        ...

    async def ledger_entries(self, start: int = 0, limit: int | None = None) -> list[StoredEntry]: ...

    async def ledger_tail(self, n: int) -> list[StoredEntry]: ...

    async def verify(self) -> VerifyReport: ...

    async def dead_letters(self, limit: int) -> list[JobInfo]: ...

    async def requeue(self, job_id: str | None, *, all_dead: bool = False) -> list[tuple[str, str]]:
        """Put dead letters back as new jobs; return (old id, new id) pairs."""
        ...

    async def purge_dead(self, older_than: float) -> int:
        """Delete dead letters that died more than ``older_than`` seconds ago."""
        ...

    # -- schedules (swarmd.schedules; fired by swarmd.runtime.scheduler) --------------------
    async def publish_schedules(self, schedules: Sequence[Schedule]) -> None:
        """Record the definitions of the schedules a daemon fires, replacing every definition
        published before (the last daemon to start wins, as with `publish_agents`) but keeping
        what is known of every schedule's ticks; ``swarmd schedule list`` shows them."""
        ...

    async def record_tick(self, name: str, tick: float, job_id: str) -> None:
        """Remember that schedule ``name``'s tick ``tick`` was submitted as ``job_id``, unless a
        later tick is remembered already (several daemons fire the same ticks)."""
        ...

    async def schedule_states(self) -> list[ScheduleState]:
        """Every schedule the store knows, by name: its published definition (None: only its
        ticks are known), its last tick fired and that tick's job."""

    # -- ledger archive --------------------------------------------------------------------
    async def ledger_anchor(self) -> Anchor | None:
        """The live ledger's anchor: index and hash of the last entry archived (or dropped);
        the live chain starts right after it (None: nothing was ever archived)."""
        ...

    async def forget_ledger(
        self,
        through: int,
        expected: Anchor | None,
        *,
        remember_for: float = DEFAULT_HORIZON,
        now: float | None = None,
    ) -> Anchor:
        """Atomically delete the live entries up to index ``through``, remember their job ids
        as archived for ``remember_for`` seconds from ``now`` (None: the current time; see
        swarmd.storage.horizon) and record the new anchor; return it. Refuses (`ArchiveError`,
        nothing written) when the anchor is no longer ``expected``. The caller made the segment
        durable first (or means to drop the entries)."""
        ...

    async def archive_hold(self) -> int | None:
        """The lowest ledger index archiving must keep live (None: none): the first entry of a
        member of a swarm whose follow-up has not been recorded yet, which reads its swarm's
        outcomes from the live ledger (``ctx.swarm_results()``)."""
        ...

    async def archived_ids(self, job_ids: Sequence[str], *, now: float | None = None) -> set[str]:
        """Those of ``job_ids`` whose ledger entry was archived and that are still remembered
        at ``now`` (None: the current time): still finished, still refused."""
        ...

    async def expire_archived_ids(self, limit: int, *, now: float | None = None) -> int:
        """Forget at most ``limit`` archived job ids whose horizon has passed at ``now`` (None:
        the current time), in one short step; return how many. Lookups ignore such ids already:
        this only gives their space back (Redis expires its sets by itself: 0)."""
        ...

    async def reclaim_space(self) -> None:
        """Give back the space archived entries held (SQLite: incremental vacuum, WAL truncated),
        in steps short enough not to hold the hot path back."""
        ...

    # -- bounded state (README "Running for a long time") ---------------------------------
    async def expire_finished(self, older_than: float, limit: int) -> int:
        """Forget at most ``limit`` of what finished jobs leave behind (idempotency keys; on
        Redis also the member sets of finished swarms) once they finished more than
        ``older_than`` seconds ago, in one short step; return how many were forgotten. The
        daemon calls it in a loop, so no call holds the queue for long."""
        ...

    async def give_back_space(self) -> bool:
        """After large deletes, return the space to the file system where the store keeps it
        (SQLite: checkpoint and truncate the WAL, never waiting on a reader); True if it did."""
        ...
