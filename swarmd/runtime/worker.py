"""The daemon's worker: one long-lived TaskGroup pulling, running and committing jobs.

It reads top-down, one step per part: **pull** (`_pull_loop`) → **run** (`JobRunner.run`, one
task per job) → **commit** (`Committer`). Four kinds of task share the group:

- the **puller** reserves, in one round trip, as many ready jobs as there are free slots plus
  up to ``reserve_ahead`` more, and starts a task per job as slots allow; the jobs reserved
  ahead wait here, and a slot freed by a job's end starts the next of them at once, while the
  puller's next reservation is already on its way (the queue's work and the handlers' overlap
  instead of taking turns). With nothing to do it sleeps until woken (a submit, a freed slot,
  a delayed job coming due) — never a busy poll;
- one **job task** per reserved job (`JobRunner.run`), which frees its slot the moment the
  handler ends and hands its `Attempt` to the committer; `RunningJobs` keeps the running ones.
  Job tasks are *not* children of the group, though everything else is: a TaskGroup awaits
  every child before it exits, and a handler that swallows its cancellation would then hold
  the daemon forever. So they are plain loop tasks, held (a strong reference) by
  `RunningJobs` from creation to their done callback, which is where their end is handled
  — the same one place as before; the drain, and the end of a crash, wait for them (or
  abandon them, see swarmd.runtime.running) before `run` returns. What structured concurrency
  gave them, no task outliving its owner and no error lost, is kept by those two rules: a
  job task never raises (its errors are outcomes), and `run` never returns while one it
  started still counts. The one exception is deliberate: an abandoned task outlives `run`.
- the **committer** (`swarmd.runtime.committer`) writes every attempt gathered since its last
  commit in ONE backend call; metrics count an outcome only once it is committed
  (`OutcomeMetrics`), and a failed commit is retried, with reservations paused, until it
  succeeds;
- **housekeeping** renews leases, takes back expired ones, picks up cancel requests and reads
  queue depths for the metrics; the **heartbeat** alone measures event-loop lag and marks the
  loop alive, so that a backend call that hangs never looks like a stalled loop.

`stop` drains: no more reservations, jobs reserved ahead are given back to the queue unrun,
running jobs get the grace period, the rest are cancelled and given back too, and everything
is committed before `run` returns. A handler that ignores its cancellation is abandoned
ABANDON_AFTER seconds after it, so a drain ends within the grace period plus that bound.

If an exception escapes the group anyway (a bug of swarmd's own, or one a handler provoked),
`run` tells ``on_crash`` which jobs were running (swarmd.runtime.crashes keeps the record that
makes a job named by repeated crashes a poison job), gives every job it holds back to the
queue with its attempt unspent, within a bound, and re-raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any, Final, cast

import msgspec
import structlog

from swarmd.config import Settings
from swarmd.errors import BackendUnavailable, error_text
from swarmd.model import Outcome
from swarmd.policies.admission import Admission
from swarmd.policies.concurrency import AimdLimit, ConcurrencyLimit, FixedLimit
from swarmd.queue.base import Disposition, FinishReport, JobFilter, QueueBackend, WakeReason
from swarmd.registry import Registry
from swarmd.runtime.committer import Committer
from swarmd.runtime.execution import CANCEL_DRAIN, CANCEL_REQUESTED, Attempt, JobRunner
from swarmd.runtime.health import Health
from swarmd.runtime.outcome_metrics import OutcomeMetrics
from swarmd.runtime.reserve_ahead import MAX_WAIT, AheadPacing, ReservedAhead
from swarmd.runtime.running import ABANDON_AFTER, RunningJobs
from swarmd.runtime.spawning import Spawning
from swarmd.runtime.swarm_spans import trace_ended_swarms
from swarmd.telemetry.metrics import Metrics
from swarmd.telemetry.tracing import Tracing

__all__ = ["Health", "Worker", "make_limit"]

log = structlog.get_logger("swarmd.worker")

LAG_TICK: Final = 0.25
#: After a second stop signal, how long cancelled handlers get before they are abandoned.
HURRIED_WAIT: Final = 0.05
#: Longest the jobs held when the worker crashes get to be given back (cancel + commit).
CRASH_BOUND: Final = 3.0
COUNTS_EVERY: Final = 2.0
#: Dispositions that put a job back in the queue with a not_before the puller must look at.
_REQUEUED: Final = (Disposition.RETRY, Disposition.RELEASE)  # a tuple: `in` hashes no Enum (a Python call)


def make_limit(settings: Settings) -> ConcurrencyLimit:
    """The concurrency limit the settings ask for: fixed at max_concurrent, or adaptive (AIMD)
    between min_concurrent and max_concurrent."""
    if settings.concurrency == "adaptive":
        return AimdLimit(minimum=settings.min_concurrent, maximum=settings.max_concurrent)
    return FixedLimit(settings.max_concurrent)


class Worker:
    """Pulls from a backend and runs jobs until stopped."""

    _loop: asyncio.AbstractEventLoop  # set when `run` begins

    def __init__(
        self,
        backend: QueueBackend,
        registry: Registry,
        settings: Settings,
        metrics: Metrics,
        tracing: Tracing,
        *,
        rng: random.Random | None = None,
        burst: bool = False,
    ) -> None:
        self.backend = backend
        #: The settings in force: a reload replaces the snapshot, never changes it in place.
        self.settings = settings
        self.metrics = metrics
        self.tracing = tracing
        self.burst = burst  # return once the queue is empty (tests, benchmarks)
        self.admission = Admission(registry, settings, metrics)
        #: What `_publish_holds` published last (None: nothing yet, so the first tick clears
        #: whatever an earlier daemon left).
        self._published_holds: dict[str, str] | None = None
        #: The jobs running now, shared with the runner (which cancels a job at its timeout).
        self.running = RunningJobs()
        self.running.on_stuck = self._abandon
        #: Told the ids of the jobs running when an exception escaped `run` (before it re-raises).
        self.on_crash: Callable[[list[str], BaseException], None] | None = None
        self.runner = JobRunner(self.admission, metrics, tracing, settings.queue, self.running, rng)
        self.runner.max_result_bytes = settings.max_result_bytes
        admission = self.admission
        self.runner.workflow = Spawning(
            tracing,
            settings.queue,
            known_agent=lambda name: name in admission.gates or name in admission.served_elsewhere,
            agents=lambda: sorted({*admission.gates, *admission.served_elsewhere}),
            swarm_outcomes=backend.swarm_outcomes,
            max_payload_bytes=settings.max_payload_bytes,
        )
        self.limit = make_limit(settings)
        self.health = Health()
        self.in_flight = 0
        #: Jobs reserved ahead of a free slot (see swarmd.runtime.reserve_ahead).
        self._ahead = ReservedAhead()
        #: How many the next reservation may take beyond the free slots.
        self.pacing = AheadPacing()
        #: Job tasks ended so far (the pace the allowance follows).
        self._ended = 0
        self._group: asyncio.TaskGroup | None = None
        self._context = contextvars.copy_context()
        self._on_job_done = self._job_done  # bound once: every job task shares it
        self.on_committed: list[Callable[[list[Attempt]], None]] = []
        #: A task of its own in the group, beside housekeeping (the daemon's ledger upkeep:
        #: checkpoints and archiving, see swarmd.runtime.ledger_upkeep); None: none.
        self.upkeep: Callable[[], Coroutine[Any, Any, None]] | None = None
        self.committer = Committer(
            backend,
            metrics,
            self.health,
            batch_size=settings.reserve_batch,
            in_flight=lambda: self.in_flight,
            committed=self._committed,
            recovered=self._commit_recovered,
        )
        self._hand_over = self.committer.hand_over  # bound once: called per job
        #: Set whenever a job task ends; only the committer's linger waits on it.
        self._job_ended = self.committer.job_ended
        self.outcome_metrics = OutcomeMetrics(metrics, tracing)
        self._slot_freed = asyncio.Event()
        #: Set when this worker itself puts jobs back (retry, release): an idle puller looks again.
        self._requeued = asyncio.Event()
        self._stopping = asyncio.Event()
        self._hurry = asyncio.Event()
        self._grace = settings.grace_seconds
        metrics.set_concurrency_limit(self.limit.limit)

    # -- control --------------------------------------------------------------------------
    def stop(self, grace: float | None = None) -> None:
        """Begin the drain (SIGTERM); a second call shortens it to nothing."""
        if self._stopping.is_set():
            self._hurry.set()
            return
        if grace is not None:
            self._grace = grace
        self.health.draining = True
        self._stopping.set()
        self._slot_freed.set()

    async def stop_requested(self) -> None:
        """Return once `stop` has been called."""
        await self._stopping.wait()

    def reload(self, settings: Settings) -> None:
        """Apply what can change live, the concurrency bounds, from settings read anew: the
        worker takes a new snapshot of its settings with them (the rest take a restart)."""
        if settings.concurrency != self.settings.concurrency:
            self.limit = make_limit(settings)
        else:
            self.limit.set_bounds(settings.min_concurrent, settings.max_concurrent)
        self.settings = msgspec.structs.replace(
            self.settings,
            concurrency=settings.concurrency,
            max_concurrent=settings.max_concurrent,
            min_concurrent=settings.min_concurrent,
        )
        self.metrics.set_concurrency_limit(self.limit.limit)
        # A higher limit takes jobs reserved ahead at once (in the context job tasks start in),
        # not when a job ends or the puller next looks.
        with contextlib.suppress(RuntimeError):  # no running loop: nothing runs, nothing waits
            asyncio.get_running_loop().call_soon(self._start_ahead, context=self._context)
        self._slot_freed.set()

    def cancel_job(self, job_id: str, reason: str = CANCEL_REQUESTED) -> bool:
        """Cancel a job held here, waiting ahead (it ends as it would have at its first step)
        or running (also both, if it was reserved again while it ran). False: not held here."""
        waiting = self._ahead.pop(job_id)
        if waiting is not None:
            self._hand_over(self.runner.unstarted(waiting, reason))
        return self.running.cancel(job_id, reason) or waiting is not None

    # -- the loop -------------------------------------------------------------------------
    async def run(self) -> None:
        """Pull, run and commit jobs until stopped; return once the drain is committed."""
        self.health.started = True
        # Job tasks copy the context they are created in: the puller's (this task's), or, for one
        # started by a freed slot, its done callback's (this copy of it, taken as the run begins).
        self._context = contextvars.copy_context()
        self._loop = asyncio.get_running_loop()
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                committer = group.create_task(self.committer.run(), name="swarmd-committer")
                housekeeping = group.create_task(self._housekeeping(), name="swarmd-housekeeping")
                heartbeat = group.create_task(self.heartbeat(), name="swarmd-heartbeat")
                upkeep = None if self.upkeep is None else group.create_task(self.upkeep(), name="swarmd-ledger-upkeep")
                await self._pull_loop()
                if upkeep is not None:
                    upkeep.cancel()
                await self._drain()
                self.committer.close()
                await committer
                housekeeping.cancel()
                heartbeat.cancel()
        except asyncio.CancelledError:
            # Cancelled from outside (no drain): the job tasks go too, as children would have.
            if self.running.runs():
                self.running.cancel_all(CANCEL_DRAIN)
                await self._wait_for_runs(self.running.abandon_after + LAG_TICK)
                for task, job_id in self.running.tasks():
                    self._abandon(task, job_id)
            raise
        except BaseException as exc:
            await self._crashed(exc)
            raise
        finally:
            self._group = None

    async def _crashed(self, exc: BaseException) -> None:
        """An exception escaped the group: say which jobs were running, then give every job
        held here back to the queue, attempt unspent (whichever job caused it, the crash
        records count it), within CRASH_BOUND seconds; what cannot be given back in time
        stays leased, and the next start takes it back."""
        suspects = list(self.running) + [reserved.job_id for reserved in self.running.displaced_runs()]
        log.error("worker_crashed", error=error_text(exc), running=suspects)
        if self.on_crash is not None:
            try:
                self.on_crash(suspects, exc)
            except Exception as failure:
                log.error("crash_record_failed", error=error_text(failure))
        self._stopping.set()
        self.health.draining = True
        self._give_back_ahead()
        self.running.cancel_all(CANCEL_DRAIN)
        deadline = time.monotonic() + CRASH_BOUND
        await self._wait_for_runs(min(ABANDON_AFTER, CRASH_BOUND / 2))
        for task, job_id in self.running.tasks():  # ignored their cancel: abandoned now
            self._abandon(task, job_id)
        pending = self.committer.take_pending()
        if not pending:
            return
        try:
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                await self.backend.finish([attempt.finish for attempt in pending])
            log.info("crash_jobs_given_back", jobs=len(pending))
        except Exception as failure:  # the queue itself may be why we crashed
            log.error("crash_give_back_failed", jobs=len(pending), error=error_text(failure))

    async def _wait_for_runs(self, seconds: float, *, hurry_cuts: bool = True) -> None:
        """Wait until no job task runs, at most ``seconds`` (unless ``hurry_cuts`` is false, a
        second stop signal ends the wait at once)."""
        deadline = time.monotonic() + seconds
        while self.running.runs() and not (hurry_cuts and self._hurry.is_set()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._slot_freed.clear()
            waits = [asyncio.ensure_future(self._slot_freed.wait())]
            if hurry_cuts:
                waits.append(asyncio.ensure_future(self._hurry.wait()))
            await asyncio.wait(waits, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waits:
                waiter.cancel()

    async def _pull_loop(self) -> None:
        while not self._stopping.is_set():
            self._start_ahead()
            room = self.limit.limit - self.in_flight + self.pacing.allowance - len(self._ahead)
            if room <= 0 or self.health.commit_error is not None:
                # Wait for a slot; a cancel request for a running job is acted on meanwhile.
                await self._idle(self.settings.poll_interval, slots=True)
                continue
            self.pacing.asking()
            try:
                batch = await self.backend.reserve(
                    min(room, self.settings.reserve_batch),
                    lease=self.settings.lease_seconds,
                    exclude_agents=self.admission.blocked_agents(),
                )
                self.health.backend_error = None
            except BackendUnavailable as exc:
                self.health.backend_error = str(exc)
                log.warning("reserve_failed", error=str(exc))
                await self._idle(1.0, slots=False)
                continue
            # Stale: asked for at a pace that has since dropped (jobs waiting ahead went back).
            stale = self.pacing.answered(self._ended, self.settings.reserve_ahead)
            if not batch:
                if (
                    self.burst
                    and self.in_flight == 0
                    and not self._ahead
                    and not self.committer.uncommitted
                    and not await self._more_due()
                ):
                    self.stop()
                    break
                # A freed slot is work only in burst mode, or for an agent held at its own limit.
                await self._idle(await self._idle_timeout(), slots=self.burst or self.admission.waiting_for_slot())
                continue
            reserved_wall = time.time()
            ahead = self._ahead
            for reserved in batch:
                ahead.add(reserved, reserved_wall)
            self.outcome_metrics.reserved(batch, reserved_wall)
            if stale:  # what fits in the free slots runs; the rest goes back rather than wait
                self._start_ahead()
                self._give_back_ahead()

    def _start_ahead(self) -> None:
        """Start jobs reserved ahead, oldest first, while there are free slots (never once the
        worker is stopping: the drain gives them back)."""
        if not self._ahead or self._stopping.is_set():
            return
        free = self.limit.limit - self.in_flight
        if free <= 0:
            return
        loop = self._loop
        if self._group is None:  # not running (or the worker is crashing): start nothing
            return
        # Scheduling overhead counts from here: time spent waiting for a slot is the
        # concurrency limit at work, which queue wait shows, not swarmd's own overhead.
        dequeued = time.perf_counter()
        ahead, running = self._ahead, self.running
        for _ in range(min(free, len(ahead))):
            reserved, reserved_wall = ahead.oldest()
            # Named by its job id, so that one shared callback finds its reservation (a per-job
            # functools.partial cost ~260 B per job in flight). Not a child of the group: see the
            # module docstring; `running` holds it until its done callback.
            task = loop.create_task(self.runner.run(reserved, reserved_wall, dequeued), name=reserved.job_id)
            ahead.pop_oldest()
            self.in_flight += 1
            task.add_done_callback(self._on_job_done, context=self._context)  # one shared context
            running.add(task, reserved)

    async def _more_due(self) -> bool:
        """Whether the queue still holds jobs to come due (burst mode stops only without)."""
        try:
            due = await self.backend.next_due()
        except BackendUnavailable as exc:  # not known to be empty: keep going
            self.health.backend_error = str(exc)
            return True
        return due is not None

    async def _idle_timeout(self) -> float:
        """How long an idle puller may sleep: until the next delayed job comes due or a
        blocked agent may be admitted again, at most poll_interval."""
        timeout = self.settings.poll_interval
        try:
            due = await self.backend.next_due()
        except BackendUnavailable as exc:  # the queue went away after the reserve: idle as after a failed one
            self.health.backend_error = str(exc)
            due = None
        if due is not None:
            timeout = min(timeout, max(0.0, due - time.time()))
        unblock = self.admission.soonest_unblock()
        if unblock is not None:
            timeout = min(timeout, unblock)
        return max(timeout, 0.001)

    async def _idle(self, seconds: float, *, slots: bool) -> None:
        """Sleep until work may have arrived (a submit, a cancel request, a retry of our own), the worker stops, or
        ``seconds`` pass; with ``slots``, also until a running job frees its slot. A freed slot
        does not wake an idle puller otherwise: it creates no work to reserve."""
        work = asyncio.ensure_future(self.backend.wait_for_work(seconds))
        waits: list[asyncio.Future[Any]] = [
            work,
            asyncio.ensure_future(self._stopping.wait()),
            asyncio.ensure_future(self._requeued.wait()),
        ]
        if slots:
            waits.append(asyncio.ensure_future(self._slot_freed.wait()))
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
        self._slot_freed.clear()
        self._requeued.clear()
        reasons: set[WakeReason] = set()
        if work.done() and not work.cancelled():
            if isinstance(work.exception(), BackendUnavailable):
                self.health.backend_error = str(work.exception())
            elif work.exception() is None:
                reasons = work.result()
        if WakeReason.CANCEL in reasons:
            try:
                await self._apply_cancel_requests()
            except BackendUnavailable as exc:  # housekeeping picks the requests up once it is back
                self.health.backend_error = str(exc)

    # -- a job ends -----------------------------------------------------------------------
    def _job_done(self, task: asyncio.Task[Attempt]) -> None:
        """A job task ended: free its slot and hand its attempt to the committer. (A done callback,
        not a wrapping coroutine: one frame less per job in flight.)"""
        outcome = task.result() if not task.cancelled() and task.exception() is None else None
        # Its Attempt says which job it ran; without one (cancelled, or a bug), the task's name.
        # Whatever cancel reason is left (a handler that swallowed its cancel, a cancel that came
        # as the task finished) belongs to this run only: never to the job's next attempt.
        tracked = self.running.forget(task, outcome.reserved.job_id if outcome is not None else task.get_name())
        if tracked is None:  # abandoned: its attempt was handed over then, its slot freed
            self.metrics.abandoned_tasks.set(self.running.abandoned)
            log.info("abandoned_task_ended", job_id=task.get_name())
            return
        reserved, reason = tracked
        self._slot_done()
        # Cancelled before its first step, the runner never saw it: settle it here, or its lease
        # would be renewed forever with no outcome.
        if outcome is not None:
            attempt = outcome
        elif task.cancelled():
            attempt = self.runner.unstarted(reserved, reason or CANCEL_DRAIN)
        else:  # JobRunner.run never raises: a bug of swarmd's own
            attempt = self.runner.internal_error(reserved, cast(BaseException, task.exception()), time.time())
        if attempt.run_outcome is not None:
            limit = self.limit.observe(attempt.duration, attempt.run_outcome is Outcome.SUCCEEDED)
            self.metrics.set_concurrency_limit(limit)
        self._hand_over(attempt)
        if self._ahead:  # the freed slot takes the next job reserved ahead now, not when the puller wakes
            self._start_ahead()

    def _slot_done(self) -> None:
        """A job task no longer counts: its slot is free."""
        self.in_flight -= 1
        self._ended += 1
        self._slot_freed.set()
        self._job_ended.set()

    def _abandon(self, task: asyncio.Task[Attempt], job_id: str) -> None:
        """A cancelled handler has not stopped within ABANDON_AFTER: record its attempt as the
        cancel said (a timeout, a cancel, a drain's give-back), free its slot, and leave its task
        running among the abandoned, never awaited (`swarmd_abandoned_tasks`)."""
        tracked = self.running.abandon(task, job_id)
        if tracked is None:
            return
        reserved, reason = tracked
        self.metrics.abandoned_tasks.set(self.running.abandoned)
        reason = reason or CANCEL_DRAIN
        log.warning(
            "job_abandoned",
            job_id=reserved.job_id,
            agent=reserved.agent,
            reason=reason,
            after_s=self.running.abandon_after,
            detail="the handler ignored its cancellation; its task is left running, not awaited",
        )
        self._slot_done()
        self._hand_over(self.runner.abandoned(reserved, reason))
        if self._ahead:
            self._start_ahead()

    def _give_back_ahead(self) -> None:
        """Jobs reserved ahead go back to the queue unrun, their attempt unspent (draining, or
        waiting too long)."""
        while self._ahead:
            reserved, _ = self._ahead.pop_oldest()
            self._hand_over(self.runner.unstarted(reserved, CANCEL_DRAIN))

    def _give_back_stale_ahead(self) -> None:
        """A job reserved ahead that waited MAX_WAIT seconds means the pace that let it in has
        dropped: every job waiting goes back to the queue, and nothing more is reserved ahead
        until a reservation measures the pace again, from now on."""
        waited = self._ahead.longest_wait()
        if waited >= MAX_WAIT:
            log.info("reserved_ahead_given_back", jobs=len(self._ahead), waited_s=round(waited, 3))
            self.pacing.gave_back(self._ended)
            self._give_back_ahead()

    # -- after a commit --------------------------------------------------------------------
    def _committed(self, batch: list[Attempt], report: FinishReport) -> None:
        """What a commit causes here: metrics, siblings of a failed swarm cancelled, listeners
        told, an idle puller woken where the commit put jobs back or emptied a burst."""
        if any(attempt.finish.disposition in _REQUEUED for attempt in batch):
            self._requeued.set()  # the puller's idle wait was computed without these not_before
        self.outcome_metrics.count(batch)
        trace_ended_swarms(self.tracing, self.settings.queue, batch, report.swarms_ended)
        for cancelled in report.cancelled:
            self.cancel_job(cancelled)
        for listener in self.on_committed:
            listener(batch)
        if self.burst and not self.committer.uncommitted:
            self._slot_freed.set()  # let a burst-mode puller notice the queue is done

    def _commit_recovered(self) -> None:
        """Commits succeed again: a puller paused by the failure may reserve again."""
        self._slot_freed.set()

    # -- housekeeping ---------------------------------------------------------------------
    async def heartbeat(self) -> None:
        """Mark the event loop alive and measure its lag, every LAG_TICK, and nothing else: a
        backend call that hangs (Redis paused) must not look like a stalled loop to /healthz
        and the systemd watchdog."""
        expected = time.monotonic() + LAG_TICK
        while True:
            await asyncio.sleep(max(0.0, expected - time.monotonic()))
            now = time.monotonic()
            self.metrics.observe_loop_lag(max(0.0, now - expected))
            self.health.last_tick = now
            expected = now + LAG_TICK

    async def _housekeeping(self) -> None:
        """Every LAG_TICK: give back jobs that waited ahead too long; every third of a lease:
        renew the leases held here and pick up cancel requests, take back other daemons'
        expired leases; every COUNTS_EVERY: queue depths and stale swarms."""
        renew_every = self.settings.lease_seconds / 3
        next_renew = time.monotonic() + renew_every
        next_recover = time.monotonic() + renew_every
        next_counts = 0.0
        while True:
            await asyncio.sleep(LAG_TICK)
            now = time.monotonic()
            try:
                self._give_back_stale_ahead()
                if now >= next_renew:
                    next_renew = now + renew_every
                    if self.running or self._ahead or self.committer.uncommitted:
                        held = [*self.running, *self._ahead]
                        await self.backend.renew(held, lease=self.settings.lease_seconds)
                    await self._apply_cancel_requests()
                if now >= next_recover:
                    next_recover = now + renew_every
                    recovered = await self.backend.recover(all_leases=False)
                    if recovered:
                        log.warning("leases_recovered", jobs=recovered)
                if now >= next_counts:
                    next_counts = now + COUNTS_EVERY
                    self.metrics.set_queue_depths(await self.backend.counts())
                    if self.admission.unroutable:
                        kept = [await self.backend.count_jobs(JobFilter(agent=a)) for a in self.admission.unroutable]
                        self.metrics.jobs_unroutable.set(sum(kept))
                    self.outcome_metrics.forget_stale_swarms()
                    await self._publish_holds()
                self.health.backend_error = None
            except BackendUnavailable as exc:
                self.health.backend_error = str(exc)
            except Exception as exc:
                log.error("housekeeping_failed", error=error_text(exc))

    async def _publish_holds(self) -> None:
        """Tell operators' reads why ready jobs wait (open circuits, agents not loaded here),
        when that changed since the last time."""
        holds = self.admission.holds(time.time())
        if holds != self._published_holds:
            await self.backend.publish_holds(holds)
            self._published_holds = holds

    async def _apply_cancel_requests(self) -> None:
        """Cancel the jobs held here that a client asked to cancel."""
        for job_id in await self.backend.cancel_requested():
            if self.cancel_job(job_id):
                log.info("cancel_requested", job_id=job_id)

    # -- draining -------------------------------------------------------------------------
    async def _drain(self) -> None:
        """Give back the jobs reserved ahead, let running jobs finish within the grace period
        (or until `stop` is called again), then cancel the rest."""
        self._give_back_ahead()
        running = self.running
        if running.runs():
            log.info("draining", running=running.runs(), grace_s=self._grace)
            deadline = time.monotonic() + self._grace
            while running.runs() and not self._hurry.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._slot_freed.clear()
                hurry = asyncio.ensure_future(self._hurry.wait())
                freed = asyncio.ensure_future(self._slot_freed.wait())
                await asyncio.wait([hurry, freed], timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                hurry.cancel()
                freed.cancel()
            if running.runs():
                log.warning("drain_grace_over", cancelling=running.runs())
            # A requested cancel stays one; the others give their jobs back. A handler that
            # ignores its cancel is abandoned (its job given back) ABANDON_AFTER later, or at once
            # after a second stop signal.
            hurried = self._hurry.is_set()
            running.cancel_all(CANCEL_DRAIN)
            if hurried:  # a moment for the handlers that do stop, then no more waiting
                await self._wait_for_runs(HURRIED_WAIT, hurry_cuts=False)
            else:
                await self._wait_for_runs(running.abandon_after + LAG_TICK)
            for task, job_id in running.tasks():
                self._abandon(task, job_id)
