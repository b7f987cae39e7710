"""Submitting and inspecting work from Python: `Client` (blocking) and `AsyncClient`.

::

    from swarmd import Client
    with Client(state_dir="/var/lib/swarmd") as client:
        job_id = client.submit("summarize", gid="GID-01", payload={"url": "..."})
        swarm = client.submit_many([{"agent": "sleep", "gid": f"G{i}"} for i in range(50)], swarm=True)

A producer that is not the daemon's user goes through the daemon's API socket (``socket=``,
``SWARMD_SOCKET``, or found when the state dir is not its own: `swarmd.api.transport`).

A submit is durable when it returns, and wakes an idle daemon at once. Jobs are checked here,
before anything is written: a malformed job, an unknown agent or an oversized payload raises
`JobValidationError` naming the field.

Operators get the rest of what the ``swarmd`` command line shows and does, which is built on
this API alone: `status`, `list_jobs`, `count_jobs`, `counts`, `cancel`, `cancel_matching`, the ledger (`ledger`,
`ledger_tail`, `iter_ledger`, `verify`) and the dead letters (`dead_letters`, `requeue`,
`purge_dead`), and the schedules daemons fire (`schedules`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import uvloop

from swarmd.api.transport import choose_backend
from swarmd.config import Settings, archived_id_ttl_seconds, resolve_state_dir
from swarmd.errors import JobFailed, UnknownAgentError, WaitTimeout
from swarmd.handles import JobHandle, Submitted
from swarmd.ledger.archive import archived_entries, verify_with_archive
from swarmd.ledger.chain import Anchor, AnchorFinding, StoredEntry, VerifyReport, check_anchors
from swarmd.ledger.chain import verify as verify_chain
from swarmd.model import MAX_PAYLOAD_BYTES, Job, JobState, SwarmPlan, draft_spec, new_job_id, new_job_ids, seal
from swarmd.queue.archiving import ArchiveRun, Selection, archive_ledger
from swarmd.queue.base import JobFilter, JobInfo, SwarmProgress
from swarmd.queue.waiting import backstop_interval
from swarmd.results import JobResult
from swarmd.schedules import ScheduleInfo
from swarmd.telemetry.tracing import Tracing
from swarmd.workflows import check_swarm_options, plan_follow_up

__all__ = [
    "AsyncClient",
    "Client",
    "JobHandle",
    "JobInfo",
    "JobResult",
    "ScheduleInfo",
    "StoredEntry",
    "Submitted",
    "SwarmProgress",
    "VerifyReport",
]

#: Ledger entries `iter_ledger` reads per query.
LEDGER_BATCH: Final = 5000


class AsyncClient:
    """Submit jobs and read their fate, from async code."""

    def __init__(
        self,
        state_dir: str | Path | None = None,
        *,
        settings: Settings | None = None,
        agents: Iterable[str] | None = None,
        tracing: Tracing | None = None,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        blocking_io: bool = False,
        read_only: bool = False,
        socket: str | Path | None = None,
        wait_backstop: float | None = None,
    ) -> None:
        self.settings = settings or Settings()
        #: Seconds between two looks at the ledger while a wait hears no notification (a lost
        #: one): ``wait_backstop``, else ``$SWARMD_WAIT_BACKSTOP``, else 1.
        self.wait_backstop = backstop_interval(wait_backstop)
        directory = resolve_state_dir(str(state_dir) if state_dir else self.settings.state_dir)
        # blocking_io: the blocking Client's private loop runs nothing else, so its SQLite work
        # need not hop to a thread and back. read_only: for reading an existing state (status,
        # jobs, the ledger), also a read-only copy of one; submits and cancels then fail.
        # socket: the daemon's API socket (else $SWARMD_SOCKET, else the state dir directly when it
        # is this user's, else a socket that answers: swarmd.api.transport).
        self._backend = choose_backend(
            self.settings, directory, socket_path=socket, blocking=blocking_io, read_only=read_only
        )
        #: Agent names jobs may name: given, else what the daemon published (None: unchecked).
        #: Set it to check submits against other names (the CLI: those a daemon with its config
        #: would serve, see `swarmd.registry.build_registry`, and those published).
        self.known_agents = set(agents) if agents is not None else None
        # Given: the caller's to shut down. Else built from the OTEL_* environment at the first
        # submit (disabled, and next to free, when none is set) and shut down by close().
        self._tracing = tracing
        self._owns_tracing = tracing is None
        self.max_payload_bytes = min(max_payload_bytes, self.settings.max_payload_bytes)
        self._opened = False

    async def open(self) -> Self:
        if not self._opened:
            await self._backend.open()
            self._opened = True
            if self.known_agents is None:
                published = await self._backend.published_agents()
                self.known_agents = set(published) if published is not None else None
        return self

    @property
    def tracing(self) -> Tracing:
        """Opens the PRODUCER span ``send <queue>`` of each submit (see `__init__`'s ``tracing``)."""
        if self._tracing is None:
            self._tracing = Tracing.from_env()
        return self._tracing

    async def close(self) -> None:
        """Close the backend; flush and shut down the tracing this client built itself."""
        try:
            if self._opened:
                self._opened = False
                await self._backend.close()
        finally:
            if self._owns_tracing and self._tracing is not None:
                tracing, self._tracing = self._tracing, None
                if tracing.enabled:
                    await asyncio.to_thread(tracing.shutdown)  # the export waits on the network: off the loop

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _check_agent(self, agent: str) -> None:
        if self.known_agents is not None and agent not in self.known_agents:
            raise UnknownAgentError(agent, sorted(self.known_agents))

    def draft(
        self,
        spec: Mapping[str, Any],
        *,
        job_id: str,
        swarm_id: str | None = None,
        swarm_size: int | None = None,
        fail_fast: bool = False,
        traceparent: str | None = None,
        now: float | None = None,
    ) -> Job:
        """A job from a spec mapping (fields checked by `seal`, all at once, afterwards)."""
        job = draft_spec(
            spec,
            job_id=job_id,
            swarm_id=swarm_id,
            swarm_size=swarm_size,
            fail_fast=fail_fast,
            traceparent=traceparent,
            now=now,
        )
        self._check_agent(job.agent)
        return job

    async def submit(self, agent: str, *, gid: str, payload: Any = None, **options: Any) -> JobHandle:
        """Submit one job; return its id once it is durable (a `JobHandle`: a ``str`` with
        ``await handle.wait()`` and ``await handle.result()``)."""
        result = await self.submit_many([{"agent": agent, "gid": gid, "payload": payload, **options}])
        return JobHandle(result[0], self)

    async def submit_many(
        self,
        specs: Sequence[Mapping[str, Any]],
        *,
        swarm: bool = False,
        fail_fast: bool = False,
        then: Mapping[str, Any] | None = None,
        then_when: str = "always",
    ) -> Submitted:
        """Submit jobs in one transaction; ``swarm=True`` makes them one swarm (``fail_fast``:
        the first permanent failure cancels the rest; ``then``: a job spec submitted once, when
        the swarm's last member has ended — ``then_when="all_succeeded"`` runs it only if every
        member succeeded, else records it cancelled). The follow-up's id is ``.follow_up``."""
        check_swarm_options(swarm=swarm, fail_fast=fail_fast, then=then, then_when=then_when)
        swarm_id = new_job_id() if swarm else None
        now = time.time()
        submitted_by = getattr(self._backend, "peer", None)  # through the API socket: who the daemon sees
        with self.tracing.producer(self.settings.queue, submitted_by=submitted_by) as traceparent:
            ids = new_job_ids(len(specs))
            size = len(specs) if swarm else None
            drafts = [
                self.draft(
                    spec,
                    job_id=job_id,
                    swarm_id=swarm_id,
                    swarm_size=size,
                    fail_fast=fail_fast,
                    traceparent=traceparent,
                    now=now,
                )
                for spec, job_id in zip(specs, ids, strict=True)
            ]
            jobs = seal(drafts, max_payload_bytes=self.max_payload_bytes)
            plans: list[SwarmPlan] = []
            if then is not None and swarm_id is not None and jobs:
                plan = plan_follow_up(
                    then,
                    swarm_id=swarm_id,
                    size=len(jobs),
                    then_when=then_when,
                    traceparent=traceparent,
                    now=now,
                    max_payload_bytes=self.max_payload_bytes,
                )
                self._check_agent(plan.then.agent)
                plans.append(plan)
            ids = await self._backend.submit(jobs, plans)
        return Submitted(ids, swarm_id, self, plans[0].then.id if plans else None)

    async def published_agents(self) -> list[str] | None:
        """The agent names running daemons published (None: no daemon has published any yet)."""
        return await self._backend.published_agents()

    async def daemon_serving(self) -> bool:
        """Whether a daemon serves this queue, as far as the store can tell (see
        `swarmd.queue.base.QueueBackend.daemon_serving`): jobs submitted meanwhile wait for one."""
        return await self._backend.daemon_serving()

    # -- jobs ------------------------------------------------------------------------------
    async def status(self, job_id: str) -> JobInfo:
        """Where a job is: queued (its state; why it waits, if the daemon holds it back) or
        finished (its ledger entry); raises `JobNotFound`."""
        return (await self._with_holds([await self._backend.status(job_id)]))[0]

    async def swarm_status(self, swarm_id: str) -> list[JobInfo]:
        """Where each member of a swarm is; raises `JobNotFound`."""
        return await self._with_holds(await self._backend.swarm_status(swarm_id))

    async def swarm_progress(self, swarm_id: str) -> SwarmProgress | None:
        """How many of a swarm's members have ended, of how many, and its follow-up's id (None:
        the store keeps no count of this swarm)."""
        return await self._backend.swarm_progress(swarm_id)

    async def list_jobs(
        self,
        state: JobState | None = None,
        limit: int = 100,
        *,
        agent: str | None = None,
        gid: str | None = None,
        swarm_id: str | None = None,
    ) -> list[JobInfo]:
        """Up to ``limit`` queued jobs (of one state, or all; of one agent, gid or swarm, if
        given), highest priority first."""
        where = JobFilter(state=state, agent=agent, gid=gid, swarm_id=swarm_id)
        return await self._with_holds(await self._backend.list_jobs(state, limit, where))

    async def _with_holds(self, infos: list[JobInfo]) -> list[JobInfo]:
        """Say why each ready job is not starting, from what the daemon published (one read, and
        only when some job is ready)."""
        if any(info.state is JobState.READY for info in infos):
            holds = await self._backend.holds()
            if holds:
                for info in infos:
                    if info.state is JobState.READY:
                        info.waiting = holds.get(info.agent)
        return infos

    async def count_jobs(
        self,
        state: JobState | None = None,
        *,
        agent: str | None = None,
        gid: str | None = None,
        swarm_id: str | None = None,
    ) -> int:
        """How many queued jobs `list_jobs` would list with no limit."""
        return await self._backend.count_jobs(JobFilter(state=state, agent=agent, gid=gid, swarm_id=swarm_id))

    async def counts(self) -> dict[str, int]:
        """How many jobs the queue holds, by state: ready, delayed, leased, dead."""
        return await self._backend.counts()

    async def cancel(self, job_id: str | None = None, *, swarm_id: str | None = None) -> list[str]:
        """Cancel a job, or every member of a swarm: queued ones now, running ones by asking the
        daemon; return the ids affected (none: already finished)."""
        return await self._backend.cancel(job_id, swarm_id)

    async def cancel_matching(
        self,
        state: JobState | None = None,
        *,
        agent: str | None = None,
        gid: str | None = None,
        swarm_id: str | None = None,
    ) -> list[str]:
        """Cancel every queued or running job (never a dead letter) of one state, agent, gid or
        swarm (those given; none given: all of them); return the ids affected."""
        return await self._backend.cancel_matching(JobFilter(state=state, agent=agent, gid=gid, swarm_id=swarm_id))

    # -- results ---------------------------------------------------------------------------
    async def wait(self, job_id: str, timeout: float | None = None) -> JobResult:  # noqa: ASYNC109 - a bound
        """The job's `JobResult` once its outcome is recorded (at once if it is already).
        Raises `JobNotFound` at once for an unknown id, `WaitTimeout` after ``timeout`` seconds."""
        return (await self.wait_many([job_id], timeout))[0]

    async def result(self, job_id: str, timeout: float | None = None) -> Any:  # noqa: ASYNC109 - a bound
        """What the job's handler returned, once recorded; raises `JobFailed` (carrying the
        `JobResult`) if it failed, was dead-lettered or was cancelled."""
        return _value(await self.wait(job_id, timeout))

    async def wait_many(
        self,
        job_ids: Sequence[str],
        timeout: float | None = None,  # noqa: ASYNC109 - a bound, in seconds
        *,
        check_ids: bool = True,
    ) -> list[JobResult]:
        """The `JobResult` of each job, in the order given, once all are recorded. ``check_ids``:
        raise `JobNotFound` at once for an unknown id (False: they are known, as a `Submitted`'s)."""
        if check_ids:
            await self._check_ids(job_ids)
        found = await self._backend.wait_finished(job_ids, timeout, backstop=self.wait_backstop, every=True)
        missing = [job_id for job_id in dict.fromkeys(job_ids) if job_id not in found]
        if missing:
            raise WaitTimeout(missing, timeout or 0.0)
        return [_result(found[job_id]) for job_id in job_ids]

    async def results_of(
        self,
        job_ids: Sequence[str],
        timeout: float | None = None,  # noqa: ASYNC109 - a bound, in seconds
        *,
        check_ids: bool = True,
    ) -> list[Any]:
        """What each job's handler returned, in the order given; raises `JobFailed` for the
        first (in that order) that did not succeed."""
        return [_value(r) for r in await self.wait_many(job_ids, timeout, check_ids=check_ids)]

    async def wait_swarm(self, swarm_id: str, timeout: float | None = None) -> list[JobResult]:  # noqa: ASYNC109
        """The `JobResult` of every member of the swarm, in submit order, once all are recorded."""
        return await self.wait_many(await self._members(swarm_id), timeout, check_ids=False)

    async def as_completed(
        self,
        swarm_id: str | None = None,
        *,
        job_ids: Sequence[str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - a bound, in seconds
        check_ids: bool = True,
    ) -> AsyncGenerator[JobResult]:
        """Each member's `JobResult` of a swarm (or of ``job_ids``), once each, as its outcome is
        recorded. Raises `JobNotFound` for an unknown id (unless ``check_ids`` is False: the ids
        are known), `WaitTimeout` when ``timeout`` seconds pass before the last."""
        if job_ids is None:
            if swarm_id is None:
                raise ValueError("as_completed needs a swarm id or job_ids")
            job_ids = await self._members(swarm_id)
        elif check_ids:
            await self._check_ids(job_ids)
        deadline = None if timeout is None else time.monotonic() + timeout  # real time: see wait_for_entries
        pending = list(dict.fromkeys(job_ids))
        while pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            found = await self._backend.wait_finished(pending, left, backstop=self.wait_backstop)
            if not found:
                raise WaitTimeout(pending, timeout or 0.0)
            for entry in sorted(found.values(), key=lambda e: e.index):
                yield _result(entry)
            pending = [job_id for job_id in pending if job_id not in found]

    async def _check_ids(self, job_ids: Sequence[str]) -> None:
        """`JobNotFound` now for an id unknown to the queue and the ledger, not a wait forever."""
        for job_id in dict.fromkeys(job_ids):
            await self._backend.status(job_id)

    async def _members(self, swarm_id: str) -> list[str]:
        """The swarm's job ids in submit order (ids of one submit increase); `JobNotFound`."""
        return sorted({info.job_id for info in await self._backend.swarm_status(swarm_id)})

    # -- the ledger ------------------------------------------------------------------------
    async def ledger(self, start: int = 0, limit: int | None = None) -> list[StoredEntry]:
        """Ledger entries from index ``start`` on, at most ``limit`` of them."""
        return await self._backend.ledger_entries(start, limit)

    async def ledger_tail(self, n: int = 10) -> list[StoredEntry]:
        """The last ``n`` ledger entries, oldest first."""
        return await self._backend.ledger_tail(n)

    async def iter_ledger(self, start: int = 0, *, batch_size: int = LEDGER_BATCH) -> AsyncIterator[StoredEntry]:
        """Every ledger entry from index ``start`` on, in order, read ``batch_size`` at a time
        (so that a long ledger is never held in memory at once)."""
        while True:
            entries = await self._backend.ledger_entries(start, batch_size)
            for entry in entries:
                yield entry
            if len(entries) < batch_size:
                return
            start = entries[-1].index + 1

    async def verify(self) -> VerifyReport:
        """Walk the whole live chain, from its anchor: no gap, no duplicate, no edited entry."""
        return await self._backend.verify()

    # -- the ledger's archive and anchors ----------------------------------------------------
    async def ledger_anchor(self) -> Anchor | None:
        """Index and hash of the last archived entry (None: nothing archived); the live chain
        starts right after it."""
        return await self._backend.ledger_anchor()

    async def archive_ledger(
        self, to: Path | None, *, before: int | None = None, finished_before: float | None = None
    ) -> ArchiveRun:
        """Archive the oldest entries, those with an index below ``before`` and finished before
        Unix time ``finished_before`` (each None: no such limit), to segments in ``to`` (None:
        drop them, keeping only the anchor), chunk by chunk: see swarmd.queue.archiving. Their
        job ids stay refused for the settings' ``archived_id_ttl``."""
        return await archive_ledger(
            self._backend,
            Selection(before=before, finished_before=finished_before),
            to,
            remember_for=archived_id_ttl_seconds(self.settings),
        )

    # -- dead letters ----------------------------------------------------------------------
    async def dead_letters(self, limit: int = 100) -> list[JobInfo]:
        """Up to ``limit`` dead-lettered jobs, each with the reason it died (``error``)."""
        return await self._backend.dead_letters(limit)

    async def requeue(self, job_id: str | None = None, *, all_dead: bool = False) -> list[tuple[str, str]]:
        """Run a dead letter (or, with ``all_dead``, every one) again as a new job; return
        (dead job id, new job id) pairs."""
        return await self._backend.requeue(job_id, all_dead=all_dead)

    async def purge_dead(self, older_than: float) -> int:
        """Delete the dead letters that died more than ``older_than`` seconds ago; return how many."""
        return await self._backend.purge_dead(older_than)

    # -- schedules -------------------------------------------------------------------------
    async def schedules(self) -> list[ScheduleInfo]:
        """The schedules daemons published to this queue, by name: each with its next tick
        (from now), its last tick fired and that tick's job (see swarmd.schedules)."""
        now = time.time()
        return [ScheduleInfo.of(state, now) for state in await self._backend.schedule_states()]


class Client:
    """The blocking face of `AsyncClient`, for scripts and the CLI (runs its own event loop)."""

    def __init__(self, state_dir: str | Path | None = None, **kwargs: Any) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass  # no loop runs in this thread: this client may run its own
        else:
            raise RuntimeError(
                "swarmd.Client blocks, and cannot run inside a running event loop: "
                "use swarmd.AsyncClient there (async with AsyncClient(...) as client: await client.submit(...))"
            )
        # Its own loop, driven call by call with run_until_complete: asyncio.Runner.run swaps the
        # SIGINT handler in and out around every call, and the check of the old handler formats
        # the repr of the running task (~0.2 ms per call, a tenth of a 50-job submit).
        self._async = AsyncClient(state_dir, blocking_io=True, **kwargs)
        self._loop = uvloop.new_event_loop()
        self._run = self._loop.run_until_complete
        try:
            self._run(self._async.open())
        except BaseException:
            self._loop.close()
            raise

    @property
    def known_agents(self) -> set[str] | None:
        """Agent names jobs may name (None: unchecked); see `AsyncClient.known_agents`."""
        return self._async.known_agents

    @known_agents.setter
    def known_agents(self, names: Iterable[str] | None) -> None:
        self._async.known_agents = set(names) if names is not None else None

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._run(self._async.close())
        finally:
            try:
                self._run(self._loop.shutdown_asyncgens())
                self._run(self._loop.shutdown_default_executor())
            finally:
                self._loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def submit(self, agent: str, *, gid: str, payload: Any = None, **options: Any) -> JobHandle:
        return JobHandle(self._run(self._async.submit(agent, gid=gid, payload=payload, **options)), self)

    def submit_many(
        self,
        specs: Sequence[Mapping[str, Any]],
        *,
        swarm: bool = False,
        fail_fast: bool = False,
        then: Mapping[str, Any] | None = None,
        then_when: str = "always",
    ) -> Submitted:
        submitted = self._run(
            self._async.submit_many(specs, swarm=swarm, fail_fast=fail_fast, then=then, then_when=then_when)
        )
        return Submitted(submitted, submitted.swarm_id, self, submitted.follow_up)

    def wait(self, job_id: str, timeout: float | None = None) -> JobResult:
        return self._run(self._async.wait(job_id, timeout))

    def swarm_progress(self, swarm_id: str) -> SwarmProgress | None:
        return self._run(self._async.swarm_progress(swarm_id))

    def result(self, job_id: str, timeout: float | None = None) -> Any:
        return self._run(self._async.result(job_id, timeout))

    def wait_many(
        self, job_ids: Sequence[str], timeout: float | None = None, *, check_ids: bool = True
    ) -> list[JobResult]:
        return self._run(self._async.wait_many(job_ids, timeout, check_ids=check_ids))

    def results_of(self, job_ids: Sequence[str], timeout: float | None = None, *, check_ids: bool = True) -> list[Any]:
        return self._run(self._async.results_of(job_ids, timeout, check_ids=check_ids))

    def wait_swarm(self, swarm_id: str, timeout: float | None = None) -> list[JobResult]:
        return self._run(self._async.wait_swarm(swarm_id, timeout))

    def as_completed(
        self,
        swarm_id: str | None = None,
        *,
        job_ids: Sequence[str] | None = None,
        timeout: float | None = None,
        check_ids: bool = True,
    ) -> Iterator[JobResult]:
        """`AsyncClient.as_completed`, one result per step of this client's loop."""
        results = self._async.as_completed(swarm_id, job_ids=job_ids, timeout=timeout, check_ids=check_ids)
        try:
            while True:
                try:
                    yield self._run(anext(results))
                except StopAsyncIteration:
                    return
        finally:
            self._run(results.aclose())

    def published_agents(self) -> list[str] | None:
        return self._run(self._async.published_agents())

    def daemon_serving(self) -> bool:
        return self._run(self._async.daemon_serving())

    def status(self, job_id: str) -> JobInfo:
        return self._run(self._async.status(job_id))

    def swarm_status(self, swarm_id: str) -> list[JobInfo]:
        return self._run(self._async.swarm_status(swarm_id))

    def list_jobs(
        self,
        state: JobState | None = None,
        limit: int = 100,
        *,
        agent: str | None = None,
        gid: str | None = None,
        swarm_id: str | None = None,
    ) -> list[JobInfo]:
        return self._run(self._async.list_jobs(state, limit, agent=agent, gid=gid, swarm_id=swarm_id))

    def count_jobs(
        self,
        state: JobState | None = None,
        *,
        agent: str | None = None,
        gid: str | None = None,
        swarm_id: str | None = None,
    ) -> int:
        return self._run(self._async.count_jobs(state, agent=agent, gid=gid, swarm_id=swarm_id))

    def cancel_matching(
        self,
        state: JobState | None = None,
        *,
        agent: str | None = None,
        gid: str | None = None,
        swarm_id: str | None = None,
    ) -> list[str]:
        return self._run(self._async.cancel_matching(state, agent=agent, gid=gid, swarm_id=swarm_id))

    def counts(self) -> dict[str, int]:
        return self._run(self._async.counts())

    def cancel(self, job_id: str | None = None, *, swarm_id: str | None = None) -> list[str]:
        return self._run(self._async.cancel(job_id, swarm_id=swarm_id))

    def ledger(self, start: int = 0, limit: int | None = None) -> list[StoredEntry]:
        return self._run(self._async.ledger(start, limit))

    def ledger_tail(self, n: int = 10) -> list[StoredEntry]:
        return self._run(self._async.ledger_tail(n))

    def iter_ledger(self, start: int = 0, *, batch_size: int = LEDGER_BATCH) -> Iterator[StoredEntry]:
        """`AsyncClient.iter_ledger`, one batch per step of this client's loop."""
        while True:
            entries = self.ledger(start, batch_size)
            yield from entries
            if len(entries) < batch_size:
                return
            start = entries[-1].index + 1

    def verify(self, progress: Callable[[int], None] | None = None, *, archive: Path | None = None) -> VerifyReport:
        """`AsyncClient.verify`; with ``progress``, the chain is walked here, batch by batch,
        and ``progress(n)`` is told of each ``n`` live entries checked (a counter for a long
        ledger). With ``archive`` (a directory of segments), the archived entries and the live
        ones are verified as one chain from index 0."""
        if progress is None and archive is None:
            return self._run(self._async.verify())
        anchor = self.ledger_anchor()
        live = self._live_entries(progress)
        if archive is None:
            return verify_chain(live, anchor)
        return verify_with_archive(archive, anchor, live)

    def _live_entries(self, progress: Callable[[int], None] | None = None) -> Iterator[StoredEntry]:
        start = 0
        while True:
            entries = self.ledger(start, LEDGER_BATCH)
            yield from entries
            if progress is not None:
                progress(len(entries))
            if len(entries) < LEDGER_BATCH:
                return
            start = entries[-1].index + 1

    def ledger_anchor(self) -> Anchor | None:
        return self._run(self._async.ledger_anchor())

    def archive_ledger(
        self, to: Path | None, *, before: int | None = None, finished_before: float | None = None
    ) -> ArchiveRun:
        return self._run(self._async.archive_ledger(to, before=before, finished_before=finished_before))

    def iter_ledger_with_archive(self, archive: Path) -> Iterator[StoredEntry]:
        """Every entry from index 0: the archived ones (up to the anchor) from ``archive``,
        then the live ones."""
        anchor = self.ledger_anchor()
        if anchor is not None:
            yield from archived_entries(archive, anchor.index)
        yield from self._live_entries()

    def check_anchors(
        self, anchors: Sequence[Anchor], *, archive: Path | None = None
    ) -> tuple[VerifyReport, list[AnchorFinding]]:
        """Verify the chain (with ``archive``: from index 0) and whether it still passes through
        each of ``anchors`` (checkpoints the daemon logged)."""
        if archive is not None:
            return check_anchors(self.iter_ledger_with_archive(archive), anchors)
        return check_anchors(self._live_entries(), anchors, self.ledger_anchor())

    def dead_letters(self, limit: int = 100) -> list[JobInfo]:
        return self._run(self._async.dead_letters(limit))

    def requeue(self, job_id: str | None = None, *, all_dead: bool = False) -> list[tuple[str, str]]:
        return self._run(self._async.requeue(job_id, all_dead=all_dead))

    def purge_dead(self, older_than: float) -> int:
        return self._run(self._async.purge_dead(older_than))

    def schedules(self) -> list[ScheduleInfo]:
        return self._run(self._async.schedules())


def _result(entry: StoredEntry) -> JobResult:
    return JobResult.from_record(str(entry.job_id), entry.index, entry.decoded())


def _value(result: JobResult) -> Any:
    """What a job returned; `JobFailed` if it did not succeed."""
    if not result.ok:
        raise JobFailed(result)
    return result.result
