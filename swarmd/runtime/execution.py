"""Running one reserved job to exactly one outcome.

The handler runs in its own task with the job's GID bound in the identity contextvar, the
job in the logging context (`swarmd.logs.job_context`), inside a CONSUMER span, under its
timeout. Whatever it does — returns, raises, times out, returns garbage, raises a
BaseException, is cancelled — the result is an `Attempt`: what to commit (`Finish`) and what
to count once committed. A job's exception never reaches the worker's TaskGroup;
CancelledError that nobody asked for is re-raised.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import msgspec
import structlog

from swarmd.errors import ResultTooLarge, describe, error_text
from swarmd.identity import current_gid, identity_violation
from swarmd.ledger.records import OutcomeRecord
from swarmd.model import FollowWhen, Job, Outcome, SwarmPlan, plain_strings
from swarmd.policies.admission import Admission, AgentGate
from swarmd.queue.base import Disposition, Finish, Reserved
from swarmd.registry import JobContext
from swarmd.runtime.deadlines import Deadlines
from swarmd.runtime.failures import failure_info
from swarmd.telemetry.exemplars import span_exemplar
from swarmd.telemetry.logs import debug_enabled, job_context
from swarmd.telemetry.metrics import Metrics
from swarmd.telemetry.tracing import Tracing

if TYPE_CHECKING:
    from swarmd.runtime.running import RunningJobs
    from swarmd.runtime.spawning import Spawning

#: Results larger than this (encoded) fail their job with ResultTooLarge (default of the
#: ``max_result_bytes`` setting, which `JobRunner.max_result_bytes` holds).
MAX_RESULT_BYTES: Final = 64 * 1024
#: Why a running job was cancelled on purpose (anything else re-raises).
CANCEL_REQUESTED: Final = "cancelled"
CANCEL_DRAIN: Final = "drain"
CANCEL_TIMEOUT: Final = "timeout"
#: Seconds a suspect job (named in a crash record) is given back for while another one runs.
SUSPECT_WAIT: Final = 0.5

log = structlog.get_logger("swarmd.job")


class HandlerCancelled(Exception):
    """A handler let a CancelledError out although its task was not cancelled (it awaited a
    future someone else cancelled): a failure of that attempt, retried like any other."""


_encode = msgspec.json.Encoder(enc_hook=plain_strings).encode


@dataclass(slots=True)
class Attempt:
    """What one reservation of a job came to."""

    reserved: Reserved
    finish: Finish
    #: The registered agent (None when the job was refused before running: see `rejected`).
    agent: str | None
    #: How the handler run ended (None when it never ran).
    run_outcome: Outcome | None = None
    #: The job's final outcome (succeeded, dead_lettered, cancelled), RETRIED, or None (released).
    final: Outcome | None = None
    duration: float = 0.0
    violation: str | None = None
    #: "malformed" or "unknown_agent" for jobs refused without running.
    rejected: str | None = None
    job: Job | None = None
    finished_at: float = 0.0
    #: The ids of the run's span, for its duration's exemplar (None: not sampled, or no run).
    exemplar: dict[str, str] | None = None


class HandlerRun(msgspec.Struct, frozen=True):
    """One run of a job's handler, as its outcome records it: built once when the handler
    ends (or when the job ends without running), it carries what every outcome of the run
    needs."""

    reserved: Reserved
    job: Job
    #: The CONSUMER span of the run (None when the handler never ran).
    span: Any = None
    #: Wall-clock time the job was reserved (None: not recorded).
    reserved_wall: float | None = None
    #: Wall-clock time the handler started (None: it never started).
    started_wall: float | None = None
    #: Seconds the handler ran (None: not recorded).
    duration: float | None = None
    #: What the handler submitted (``ctx.submit``): committed with a successful outcome only.
    children: list[Job] | None = None
    plans: list[SwarmPlan] | None = None


def _error(exc: BaseException, attempt: int, *, permanent: bool, kind: str | None = None) -> dict[str, Any]:
    info = failure_info(exc)  # type, message, traceback: never raises
    return {
        **info,
        "type": kind or info["type"],
        "attempt": attempt,
        "permanent": permanent,
        "at": time.time(),
    }


class JobRunner:
    """Runs reserved jobs to their `Attempt`; a job's timeout cancels it through ``running``."""

    def __init__(
        self,
        admission: Admission,
        metrics: Metrics,
        tracing: Tracing,
        queue: str,
        running: RunningJobs,
        rng: random.Random | None = None,
    ) -> None:
        self.admission = admission
        self.metrics = metrics
        self.tracing = tracing
        self.queue = queue
        #: The jobs running now (kept by the worker): cancelled through it, with a reason.
        self.running = running
        self.rng = rng or random.Random()
        self.deadlines = Deadlines(self.expire)
        #: Cancel reasons recorded and not yet taken back (a live view of ``running``'s).
        self._reasons = running.reasons
        #: Job id -> how many crash records name it (see swarmd.runtime.crashes): a job named
        #: ``poison_after`` times is dead-lettered instead of run; the others, suspects, run one
        #: at a time. ``on_cleared`` is told each job that leaves the records.
        self.crashes: dict[str, int] = {}
        self.poison_after = 0
        self.on_cleared: Callable[[str], None] | None = None
        self._suspect_running: str | None = None
        #: Largest encoded result kept; a larger one fails the job (the worker sets the setting).
        self.max_result_bytes = MAX_RESULT_BYTES
        #: What handlers' contexts submit through (the worker sets it; None: ctx.submit refuses).
        self.workflow: Spawning | None = None

    # -- refusals -------------------------------------------------------------------------
    def refuse(self, reserved: Reserved, reason: str, message: str, reserved_wall: float) -> Attempt:
        """A job that cannot run at all: dead-lettered at once with its reason."""
        now = time.time()
        error = {
            "type": reason,
            "message": message,
            "attempt": reserved.attempt,
            "permanent": True,
            "at": now,
        }
        job = reserved.job
        record = OutcomeRecord(
            job_id=reserved.job_id,
            gid=(job.gid if job else reserved.gid) or "unknown",
            agent=(job.agent if job else reserved.agent) or "unknown",
            outcome=Outcome.DEAD_LETTERED,
            attempt=reserved.attempt,
            finished_at=now,
            swarm_id=job.swarm_id if job else reserved.swarm_id,
            error=error,
            reserved_at=reserved_wall,
            submitted_by=job.submitted_by if job else None,
            enqueued_at=(job.enqueued_at or None) if job else None,
        ).encode()
        log.warning("job_refused", job_id=reserved.job_id, reason=reason, detail=message)
        finish = _dead_letter(reserved.job_id, reserved.handle, record, error)
        finish.swarm_id = job.swarm_id if job else reserved.swarm_id
        finish.outcome = Outcome.DEAD_LETTERED
        return Attempt(reserved, finish, None, final=Outcome.DEAD_LETTERED, rejected=reason, job=job, finished_at=now)

    def internal_error(self, reserved: Reserved, exc: BaseException, reserved_wall: float) -> Attempt:
        """A bug of swarmd's own while running a job: dead-letter it with the error, keep serving."""
        error = error_text(exc)
        log.error("internal_error", job_id=reserved.job_id, error=error, exc_info=exc)
        attempt = self.refuse(reserved, "internal_error", error, reserved_wall)
        attempt.rejected = None
        return attempt

    def unstarted(self, reserved: Reserved, reason: str) -> Attempt:
        """The outcome of a job whose task was cancelled before it ever ran: a requested cancel
        is recorded as cancelled; anything else (drain, teardown) gives the job back unspent."""
        job = reserved.job
        if reason == CANCEL_REQUESTED and job is not None:
            now = time.time()
            cancelled = {"type": "Cancelled", "message": "cancelled before it started"}
            return self._final(HandlerRun(reserved, job), Outcome.CANCELLED, now, error=cancelled)
        return self.release(reserved, reserved.agent or (job.agent if job else ""), 0.0)

    def release(self, reserved: Reserved, agent: str, not_before: float) -> Attempt:
        """Give the job back without spending its attempt (breaker open, drain)."""
        finish = Finish(reserved.job_id, Disposition.RELEASE, not_before=not_before, handle=reserved.handle)
        return Attempt(reserved, finish, agent, job=reserved.job)

    # -- running --------------------------------------------------------------------------
    async def run(self, reserved: Reserved, reserved_wall: float, reserved_perf: float) -> Attempt:
        """Run one reserved job to its `Attempt`. Raises only a CancelledError nobody asked for;
        a bug of swarmd's own becomes an internal-error dead letter, never a crashed TaskGroup.

        One coroutine from reservation to outcome (plus the handler's own): with 100,000 jobs
        in flight every nested frame costs memory.
        """
        try:
            if self.crashes and reserved.job_id in self.crashes:
                return await self._suspect(reserved, reserved_wall, reserved_perf)
            job = reserved.job
            if job is None:
                return self.refuse(reserved, "malformed", reserved.error or "undecodable job", reserved_wall)
            gate = self.admission.gates.get(job.agent)
            if gate is None:
                if job.agent in self.admission.served_elsewhere:  # kept for a daemon that loads it
                    if job.agent not in self.admission.unroutable:
                        self.admission.unroutable.add(job.agent)
                        log.warning("agent_unroutable", agent=job.agent, job_id=reserved.job_id)
                    return self.release(reserved, job.agent, 0.0)
                return self.refuse(
                    reserved, "unknown_agent", f"no agent named {job.agent!r} is registered", reserved_wall
                )
            if job.follow_when == "all_succeeded" and job.follows is not None:
                skipped = await self._skipped(job)
                if skipped is not None:
                    error = {"type": "Skipped", "message": skipped}
                    run = HandlerRun(reserved, job, reserved_wall=reserved_wall)
                    return self._final(run, Outcome.CANCELLED, time.time(), error=error)
            if not gate.breaker.allow():
                return self.release(reserved, job.agent, time.time() + max(gate.breaker.retry_after(), 0.05))
            gate.running += 1
            try:
                if gate.slots is not None or gate.bucket is not None:
                    refused = await self._admit(reserved, job, gate, reserved_wall)
                    if refused is not None:
                        return refused
                try:
                    # The handler's run, in this same coroutine: a nested one cost ~400 B per job.
                    agent_metrics = self.metrics.agent(job.agent)
                    job_context.set(job)  # this task's own context, like the GID
                    current_gid.set(job.gid)  # tasks the handler spawns inherit it
                    ctx = JobContext(job, log, self.workflow)
                    timeout = job.timeout or gate.timeout
                    with self.tracing.consumer(
                        self.queue,
                        job_id=job.id,
                        gid=job.gid,
                        agent=job.agent,
                        attempt=job.attempt,
                        # A swarm member without a producer's context runs in its swarm's trace.
                        traceparent=job.traceparent or self._swarm_parent(job),
                    ) as span:
                        started_wall = time.time()
                        started = time.perf_counter()
                        exemplar = None if span is None else span_exemplar(span)  # sampled runs only
                        agent_metrics.scheduling_overhead.observe(started - reserved_perf, exemplar)
                        agent_metrics.queue_wait.observe(
                            max(0.0, started_wall - max(job.enqueued_at, job.not_before)), exemplar
                        )
                        self.metrics.job_started()
                        # The timeout cancels this task with a recorded reason (the path of a cancel
                        # request), on a timer shared by every job with the same timeout (swarmd.deadlines).
                        self.deadlines.start(job.id, timeout)
                        try:
                            try:
                                result = await gate.spec.handler(ctx, job.payload)
                            finally:
                                self.deadlines.cancel(job.id)
                                self.metrics.job_finished()
                                ctx.closed = True
                                run = HandlerRun(
                                    reserved,
                                    job,
                                    span,
                                    reserved_wall,
                                    started_wall,
                                    time.perf_counter() - started,
                                    ctx.children,
                                    ctx.plans,
                                )
                        except asyncio.CancelledError as exc:
                            return self._interrupted(run, gate, exc, timeout)
                        except BaseException as exc:
                            return self._failed(run, gate, exc, Outcome.FAILED)
                        if self._reasons and job.id in self._reasons:
                            # It returned although cancelled (it swallowed the CancelledError):
                            # the attempt ends as the cancel says, as it does when abandoned.
                            return self._interrupted(run, gate, None, timeout)
                        return self._succeeded(run, gate, result)
                finally:
                    if gate.slots is not None:
                        gate.slots.release()
            finally:
                gate.running -= 1
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # even a BaseException raised by a handler's result
            return self.internal_error(reserved, exc, reserved_wall)

    def _swarm_parent(self, job: Job) -> str | None:
        """The trace context a job without its own runs under: its swarm's span, for a member or
        a swarm's follow-up, so that a swarm and what follows it are one trace (None: neither)."""
        swarm = job.swarm_id or job.follows
        return None if swarm is None else self.tracing.swarm_parent(swarm)

    async def _skipped(self, job: Job) -> str | None:
        """Why a follow-up that runs only if its whole swarm succeeded is recorded cancelled
        instead of run: some member did not succeed (None: run it)."""
        if job.follows is None or self.workflow is None:
            return None
        results = await self.workflow.swarm_results(job.follows)
        failed = sum(1 for result in results if not result.ok)
        if not failed:
            return None
        log.info("follow_up_skipped", job_id=job.id, swarm_id=job.follows, failed=failed, members=len(results))
        return (
            f"skipped: {failed} of the {len(results)} members of swarm {job.follows} did not succeed "
            f"(then_when={FollowWhen.ALL_SUCCEEDED.value})"
        )

    async def _suspect(self, reserved: Reserved, reserved_wall: float, reserved_perf: float) -> Attempt:
        """A job named in crash records: dead-lettered as poison once named ``poison_after``
        times; else run alone among suspects (given back for SUSPECT_WAIT seconds, attempt
        unspent, while another runs), and cleared from the records once it ends uncrashed with
        an outcome (a retry counts; a give-back does not)."""
        job_id = reserved.job_id
        crashes = self.crashes[job_id]
        if self.poison_after and crashes >= self.poison_after:
            del self.crashes[job_id]
            self._clear(job_id)
            return self.refuse(
                reserved, "poison", f"poison: running when the daemon crashed {crashes} times", reserved_wall
            )
        if self._suspect_running is not None:
            log.info("suspect_held_back", job_id=job_id, crashes=crashes, running=self._suspect_running)
            agent = reserved.agent or (reserved.job.agent if reserved.job else "")
            return self.release(reserved, agent, time.time() + SUSPECT_WAIT)
        del self.crashes[job_id]
        self._suspect_running = job_id
        try:
            attempt = await self.run(reserved, reserved_wall, reserved_perf)
        finally:
            self._suspect_running = None
        if attempt.final is None:  # given back (a drain, a crash): not proven innocent
            self.crashes[job_id] = crashes
        else:
            self._clear(job_id)
        return attempt

    def _clear(self, job_id: str) -> None:
        if self.on_cleared is not None:
            try:
                self.on_cleared(job_id)
            except Exception as exc:  # a full disk must not fail the job
                log.warning("crash_records_not_updated", job_id=job_id, error=error_text(exc))

    def abandoned(self, reserved: Reserved, reason: str) -> Attempt:
        """The attempt of a run whose handler ignored its cancel past the bound (its task is
        abandoned): what the cancel would have made of it — a timeout (retried or
        dead-lettered), a cancelled job, or the job given back (drain)."""
        job = reserved.job
        gate = self.admission.gates.get(job.agent) if job is not None else None
        if job is None or gate is None or reason not in (CANCEL_TIMEOUT, CANCEL_REQUESTED):
            return self.release(reserved, reserved.agent or (job.agent if job else ""), 0.0)
        run = HandlerRun(reserved, job)
        logged = job_context.set(job)  # called from a timer: its log lines name the job too
        try:
            if reason == CANCEL_TIMEOUT:
                timeout = job.timeout or gate.timeout
                late = TimeoutError(f"timed out after {timeout:g}s (and ignored its cancellation: abandoned)")
                return self._failed(run, gate, late, Outcome.TIMED_OUT)
            return self._cancelled(run)
        finally:
            job_context.reset(logged)

    async def _admit(self, reserved: Reserved, job: Job, gate: AgentGate, reserved_wall: float) -> Attempt | None:
        """Wait for the agent's own slot and rate; an Attempt if cancelled meanwhile (None: go)."""
        try:
            await gate.wait_turn()
        except asyncio.CancelledError:
            # Cancelled while waiting for its agent's slot or tokens: it never ran.
            reason = self.running.take_reason(job.id)
            if reason is None:
                raise
            _uncancel()
            gate.breaker.release_trial()
            if reason == CANCEL_DRAIN:
                return self.release(reserved, job.agent, 0.0)
            return self._cancelled(HandlerRun(reserved, job, None, reserved_wall, None, 0.0))
        return None

    def _interrupted(
        self, run: HandlerRun, gate: AgentGate, exc: asyncio.CancelledError | None, timeout: float
    ) -> Attempt:
        """The handler ended with CancelledError (``exc``; None: it returned although cancelled):
        a timeout, a drain or a cancel request (the reason recorded before Task.cancel()), or a
        stray one from inside the handler. Re-raises ``exc`` when this task really is being
        cancelled by no one who gave a reason."""
        reason = self.running.take_reason(run.job.id)
        if reason is None:
            assert exc is not None  # None only when a reason is recorded
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise exc
            # A CancelledError from inside the handler (it awaited a future someone else
            # cancelled): the handler failed, like any exception; the task was not cancelled.
            stray = HandlerCancelled(
                f"the handler raised CancelledError without being cancelled {describe(exc)}".strip()
            )
            return self._failed(run, gate, stray, Outcome.FAILED)
        _uncancel()
        if reason == CANCEL_TIMEOUT:
            return self._failed(run, gate, TimeoutError(f"timed out after {timeout:g}s"), Outcome.TIMED_OUT)
        gate.breaker.release_trial()
        self.tracing.set_outcome(run.span, Outcome.CANCELLED)
        if reason == CANCEL_DRAIN:
            log.info("job_released", reason="drain")
            return self.release(run.reserved, run.job.agent, 0.0)
        return self._cancelled(run)

    def expire(self, job_id: str) -> None:
        """A job's timeout ran out: cancel its task (unless it has ended, or is being
        cancelled for another reason already)."""
        self.running.cancel(job_id, CANCEL_TIMEOUT, unless_done=True)

    # -- outcomes -------------------------------------------------------------------------
    def _succeeded(self, run: HandlerRun, gate: AgentGate, result: Any) -> Attempt:
        job = run.job
        violation = identity_violation(job.gid, result)
        if result is not None:
            try:
                size = len(_encode(result))
            except (TypeError, msgspec.EncodeError) as exc:
                bad = TypeError(f"handler returned {type(result).__name__}, which is not JSON data: {describe(exc)}")
                return self._failed(run, gate, bad, Outcome.FAILED, permanent=True, violation=violation)
            if size > self.max_result_bytes:
                too_large = ResultTooLarge(size, self.max_result_bytes)
                return self._failed(run, gate, too_large, Outcome.FAILED, permanent=True, violation=violation)
        gate.breaker.record_success()
        span = run.span
        self._trace_transitions(gate, span)
        now = time.time()
        if violation is not None:
            log.error("identity_violation", reason=violation)
            self.tracing.event(span, "swarmd.identity_violation", {"reason": violation})
        self.tracing.set_outcome(span, Outcome.SUCCEEDED)
        if debug_enabled():
            log.debug("job_succeeded", attempt=job.attempt, duration_s=run.duration)
        return self._final(run, Outcome.SUCCEEDED, now, violation=violation, result=result)

    def _failed(
        self,
        run: HandlerRun,
        gate: AgentGate,
        exc: BaseException,
        run_outcome: Outcome,
        *,
        permanent: bool = False,
        violation: str | None = None,
    ) -> Attempt:
        job = run.job
        permanent = (
            permanent or (run_outcome is Outcome.FAILED and gate.is_permanent(exc)) or not isinstance(exc, Exception)
        )
        gate.breaker.record_failure()
        self._trace_transitions(gate, run.span)
        kind = "Timeout" if run_outcome is Outcome.TIMED_OUT else None
        error = _error(exc, job.attempt, permanent=permanent, kind=kind)
        self.tracing.set_outcome(run.span, run_outcome, error["type"])
        max_attempts = job.max_attempts or gate.retry.max_attempts
        now = time.time()
        if not permanent and job.attempt < max_attempts:
            delay = gate.retry.delay(job.attempt - 1, self.rng)
            log.info(
                "job_retry",
                attempt=job.attempt,
                max_attempts=max_attempts,
                delay_s=round(delay, 3),
                error=error["type"],
                message=error["message"],
                traceback=error.get("traceback"),
            )
            finish = Finish(job.id, Disposition.RETRY, not_before=now + delay, handle=run.reserved.handle)
            return Attempt(
                run.reserved,
                finish,
                job.agent,
                run_outcome,
                Outcome.RETRIED,
                run.duration or 0.0,
                violation,
                job=job,
                finished_at=now,
                exemplar=span_exemplar(run.span),
            )
        log.warning(
            "job_dead_lettered",
            attempt=job.attempt,
            max_attempts=max_attempts,
            error=error["type"],
            message=error["message"],
            traceback=error.get("traceback"),
            permanent=permanent,
        )
        return self._final(
            run, Outcome.DEAD_LETTERED, now, run_outcome=run_outcome, dead=True, error=error, violation=violation
        )

    def _cancelled(self, run: HandlerRun) -> Attempt:
        log.info("job_cancelled", attempt=run.job.attempt)
        cancelled = {"type": "Cancelled", "message": "cancelled while running"}
        return self._final(run, Outcome.CANCELLED, time.time(), error=cancelled)

    def _final(
        self,
        run: HandlerRun,
        outcome: Outcome,
        now: float,
        *,
        run_outcome: Outcome | None = None,
        dead: bool = False,
        error: dict[str, Any] | None = None,
        violation: str | None = None,
        result: Any = None,
    ) -> Attempt:
        """The Attempt of a job's final outcome (``run_outcome``: how the run itself ended, if
        not the same). Its Finish carries the ledger record, and a dead letter if ``dead`` (a
        fail-fast swarm's member dead-lettered also cancels its siblings)."""
        job = run.job
        children = run.children if outcome is Outcome.SUCCEEDED else None
        record = OutcomeRecord(
            job_id=job.id,
            gid=job.gid,
            agent=job.agent,
            outcome=outcome,
            attempt=job.attempt,
            finished_at=now,
            swarm_id=job.swarm_id,
            error=error,
            identity_violation=violation,
            result=result,
            duration_s=run.duration,
            reserved_at=run.reserved_wall,
            started_at=run.started_wall,
            submitted_by=job.submitted_by,
            enqueued_at=job.enqueued_at or None,
            parent_id=job.parent_id,
            children=[child.id for child in children] if children else None,
            follows=job.follows,
        ).encode()
        handle = run.reserved.handle
        if not dead:
            finish = Finish(job.id, Disposition.DONE, record=record, handle=handle)
        else:
            finish = _dead_letter(job.id, handle, record, error, job.swarm_id if job.fail_fast else None)
        finish.swarm_id = job.swarm_id
        finish.outcome = outcome
        if children:
            finish.children = children
            finish.plans = run.plans or ()
        return Attempt(
            run.reserved,
            finish,
            job.agent,
            run_outcome or outcome,
            outcome,
            run.duration or 0.0,
            violation,
            job=job,
            finished_at=now,
            exemplar=span_exemplar(run.span),
        )

    def _trace_transitions(self, gate: AgentGate, span: Any) -> None:
        while gate.transitions:
            old, new = gate.transitions.pop(0)
            self.tracing.event(span, "swarmd.circuit_transition", {"from": old, "to": new})


def _dead_letter(
    job_id: str, handle: Any, record: bytes, error: dict[str, Any] | None, cancel_swarm: str | None = None
) -> Finish:
    """The Finish of a dead letter: its ledger record, and the reason kept with it (JSON)."""
    return Finish(
        job_id,
        Disposition.DEAD,
        record=record,
        error=_encode(error).decode(),
        handle=handle,
        cancel_swarm=cancel_swarm,
    )


def _uncancel() -> None:
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
