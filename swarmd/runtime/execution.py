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
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import structlog

from swarmd.identity import current_gid, identity_violation
from swarmd.ledger.records import OutcomeRecord
from swarmd.model import Job, Outcome
from swarmd.policies.admission import Admission, AgentGate
from swarmd.queue.base import Disposition, Finish, Reserved
from swarmd.registry import JobContext
from swarmd.runtime.deadlines import Deadlines
from swarmd.telemetry.logs import debug_enabled, job_context
from swarmd.telemetry.metrics import Metrics
from swarmd.telemetry.tracing import Tracing

#: Results larger than this (encoded) are not kept in the ledger entry.
MAX_RESULT_BYTES: Final = 64 * 1024
#: Why a running job was cancelled on purpose (anything else re-raises).
CANCEL_REQUESTED: Final = "cancelled"
CANCEL_DRAIN: Final = "drain"
CANCEL_TIMEOUT: Final = "timeout"

log = structlog.get_logger("swarmd.job")


class HandlerCancelled(Exception):
    """A handler let a CancelledError out although its task was not cancelled (it awaited a
    future someone else cancelled): a failure of that attempt, retried like any other."""


_encode = msgspec.json.Encoder().encode


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


def _error(exc: BaseException, attempt: int, *, permanent: bool, kind: str | None = None) -> dict[str, Any]:
    return {
        "type": kind or type(exc).__name__,
        "message": str(exc)[:2000],
        "attempt": attempt,
        "permanent": permanent,
        "at": time.time(),
    }


class JobRunner:
    """Runs reserved jobs; `cancel` asks a running one to stop with a recorded reason."""

    def __init__(
        self,
        admission: Admission,
        metrics: Metrics,
        tracing: Tracing,
        queue: str,
        rng: random.Random | None = None,
    ) -> None:
        self.admission = admission
        self.metrics = metrics
        self.tracing = tracing
        self.queue = queue
        self.rng = rng or random.Random()
        #: job id -> why it is being cancelled (set before Task.cancel()).
        self.cancel_reasons: dict[str, str] = {}
        #: job id -> (its task, its reservation), for every job running now (kept by the worker).
        self.running: dict[str, tuple[asyncio.Task[Attempt], Reserved]] = {}
        self.deadlines = Deadlines(self.expire)

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
            swarm_id=job.swarm_id if job else None,
            error=error,
            reserved_at=reserved_wall,
        ).encode()
        log.warning("job_refused", job_id=reserved.job_id, reason=reason, detail=message)
        finish = _dead_letter(reserved.job_id, reserved.handle, record, error)
        return Attempt(reserved, finish, None, final=Outcome.DEAD_LETTERED, rejected=reason, job=job, finished_at=now)

    def internal_error(self, reserved: Reserved, exc: Exception, reserved_wall: float) -> Attempt:
        """A bug of swarmd's own while running a job: dead-letter it with the error, keep serving."""
        log.error("internal_error", job_id=reserved.job_id, error=f"{type(exc).__name__}: {exc}", exc_info=exc)
        attempt = self.refuse(reserved, "internal_error", f"{type(exc).__name__}: {exc}", reserved_wall)
        attempt.rejected = None
        return attempt

    def unstarted(self, reserved: Reserved, reason: str) -> Attempt:
        """The outcome of a job whose task was cancelled before it ever ran: a requested cancel
        is recorded as cancelled; anything else (drain, teardown) gives the job back unspent."""
        job = reserved.job
        if reason == CANCEL_REQUESTED and job is not None:
            now = time.time()
            cancelled = {"type": "Cancelled", "message": "cancelled before it started"}
            return self._final(reserved, job, Outcome.CANCELLED, now, error=cancelled)
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
            job = reserved.job
            if job is None:
                return self.refuse(reserved, "malformed", reserved.error or "undecodable job", reserved_wall)
            gate = self.admission.gates.get(job.agent)
            if gate is None:
                return self.refuse(
                    reserved, "unknown_agent", f"no agent named {job.agent!r} is registered", reserved_wall
                )
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
                    ctx = JobContext(job, log)
                    timeout = job.timeout or gate.timeout
                    with self.tracing.consumer(
                        self.queue,
                        job_id=job.id,
                        gid=job.gid,
                        agent=job.agent,
                        attempt=job.attempt,
                        traceparent=job.traceparent,
                    ) as span:
                        started_wall = time.time()
                        started = time.perf_counter()
                        agent_metrics.scheduling_overhead.observe(started - reserved_perf)
                        agent_metrics.queue_wait.observe(max(0.0, started_wall - max(job.enqueued_at, job.not_before)))
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
                                duration = time.perf_counter() - started
                        except asyncio.CancelledError as exc:
                            return self._interrupted(
                                reserved, job, gate, exc, timeout, reserved_wall, started_wall, duration, span
                            )
                        except BaseException as exc:
                            return self._failed(
                                reserved, job, gate, exc, Outcome.FAILED, reserved_wall, started_wall, duration, span
                            )
                        return self._succeeded(reserved, job, gate, result, reserved_wall, started_wall, duration, span)
                finally:
                    if gate.slots is not None:
                        gate.slots.release()
            finally:
                gate.running -= 1
        except Exception as exc:
            return self.internal_error(reserved, exc, reserved_wall)

    async def _admit(self, reserved: Reserved, job: Job, gate: AgentGate, reserved_wall: float) -> Attempt | None:
        """Wait for the agent's own slot and rate; an Attempt if cancelled meanwhile (None: go)."""
        try:
            if gate.slots is not None:
                await gate.slots.acquire()
            try:
                # Tokens refill with time, not with an event: sleeping until the next one is the wait.
                while gate.bucket is not None and not gate.bucket.try_take():  # noqa: ASYNC110
                    await asyncio.sleep(gate.bucket.wait_time())
            except BaseException:
                if gate.slots is not None:
                    gate.slots.release()
                raise
        except asyncio.CancelledError:
            # Cancelled while waiting for its agent's slot or tokens: it never ran.
            reason = self.cancel_reasons.pop(job.id, None)
            if reason is None:
                raise
            _uncancel()
            gate.breaker.release_trial()
            if reason == CANCEL_DRAIN:
                return self.release(reserved, job.agent, 0.0)
            return self._cancelled(reserved, job, gate, reserved_wall, 0.0, 0.0)
        return None

    def _interrupted(
        self,
        reserved: Reserved,
        job: Job,
        gate: AgentGate,
        exc: asyncio.CancelledError,
        timeout: float,
        reserved_wall: float,
        started_wall: float,
        duration: float,
        span: Any,
    ) -> Attempt:
        """The handler ended with CancelledError: a timeout, a drain or a cancel request (the
        reason recorded before Task.cancel()), or a stray one from inside the handler. Re-raises
        ``exc`` when this task really is being cancelled by no one who gave a reason."""
        reason = self.cancel_reasons.pop(job.id, None)
        if reason is None:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise exc
            # A CancelledError from inside the handler (it awaited a future someone else
            # cancelled): the handler failed, like any exception; the task was not cancelled.
            stray = HandlerCancelled(f"the handler raised CancelledError without being cancelled {exc}".strip())
            return self._failed(reserved, job, gate, stray, Outcome.FAILED, reserved_wall, started_wall, duration, span)
        _uncancel()
        if reason == CANCEL_TIMEOUT:
            expired = TimeoutError(f"timed out after {timeout:g}s")
            return self._failed(
                reserved, job, gate, expired, Outcome.TIMED_OUT, reserved_wall, started_wall, duration, span
            )
        gate.breaker.release_trial()
        self.tracing.set_outcome(span, Outcome.CANCELLED)
        if reason == CANCEL_DRAIN:
            log.info("job_released", reason="drain")
            return self.release(reserved, job.agent, 0.0)
        return self._cancelled(reserved, job, gate, reserved_wall, started_wall, duration)

    def expire(self, job_id: str) -> None:
        """A job's timeout ran out: cancel its task (unless it is being cancelled already)."""
        entry = self.running.get(job_id)
        if entry is not None and not entry[0].done():
            self.cancel_reasons.setdefault(job_id, CANCEL_TIMEOUT)
            entry[0].cancel()

    # -- outcomes -------------------------------------------------------------------------
    def _succeeded(
        self,
        reserved: Reserved,
        job: Job,
        gate: AgentGate,
        result: Any,
        reserved_wall: float,
        started_wall: float,
        duration: float,
        span: Any,
    ) -> Attempt:
        violation = identity_violation(job.gid, result)
        if result is not None:
            try:
                size = len(_encode(result))
            except (TypeError, msgspec.EncodeError) as exc:
                bad = TypeError(f"handler returned {type(result).__name__}, which is not JSON data: {exc}")
                return self._failed(
                    reserved,
                    job,
                    gate,
                    bad,
                    Outcome.FAILED,
                    reserved_wall,
                    started_wall,
                    duration,
                    span,
                    permanent=True,
                    violation=violation,
                )
            if size > MAX_RESULT_BYTES:
                log.warning("result_not_kept", bytes=size, limit=MAX_RESULT_BYTES)
                result = None
        gate.breaker.record_success()
        self._trace_transitions(gate, span)
        now = time.time()
        if violation is not None:
            log.error("identity_violation", reason=violation)
            self.tracing.event(span, "swarmd.identity_violation", {"reason": violation})
        self.tracing.set_outcome(span, Outcome.SUCCEEDED)
        if debug_enabled():
            log.debug("job_succeeded", attempt=job.attempt, duration_s=duration)
        return self._final(
            reserved,
            job,
            Outcome.SUCCEEDED,
            now,
            violation=violation,
            result=result,
            duration=duration,
            reserved_wall=reserved_wall,
            started_wall=started_wall,
        )

    def _failed(
        self,
        reserved: Reserved,
        job: Job,
        gate: AgentGate,
        exc: BaseException,
        run_outcome: Outcome,
        reserved_wall: float,
        started_wall: float,
        duration: float,
        span: Any,
        *,
        permanent: bool = False,
        violation: str | None = None,
    ) -> Attempt:
        permanent = (
            permanent or (run_outcome is Outcome.FAILED and gate.is_permanent(exc)) or not isinstance(exc, Exception)
        )
        gate.breaker.record_failure()
        self._trace_transitions(gate, span)
        kind = "Timeout" if run_outcome is Outcome.TIMED_OUT else None
        error = _error(exc, job.attempt, permanent=permanent, kind=kind)
        self.tracing.set_outcome(span, run_outcome, error["type"])
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
            )
            finish = Finish(job.id, Disposition.RETRY, not_before=now + delay, handle=reserved.handle)
            return Attempt(
                reserved,
                finish,
                job.agent,
                run_outcome,
                Outcome.RETRIED,
                duration,
                violation,
                job=job,
                finished_at=now,
            )
        log.warning(
            "job_dead_lettered",
            attempt=job.attempt,
            max_attempts=max_attempts,
            error=error["type"],
            message=error["message"],
            permanent=permanent,
        )
        return self._final(
            reserved,
            job,
            Outcome.DEAD_LETTERED,
            now,
            run_outcome=run_outcome,
            dead=True,
            error=error,
            violation=violation,
            duration=duration,
            reserved_wall=reserved_wall,
            started_wall=started_wall,
        )

    def _cancelled(
        self,
        reserved: Reserved,
        job: Job,
        gate: AgentGate,
        reserved_wall: float,
        started_wall: float,
        duration: float,
    ) -> Attempt:
        now = time.time()
        log.info("job_cancelled", attempt=job.attempt)
        return self._final(
            reserved,
            job,
            Outcome.CANCELLED,
            now,
            error={"type": "Cancelled", "message": "cancelled while running"},
            duration=duration,
            reserved_wall=reserved_wall,
            started_wall=started_wall or None,
        )

    def _final(
        self,
        reserved: Reserved,
        job: Job,
        outcome: Outcome,
        now: float,
        *,
        run_outcome: Outcome | None = None,
        dead: bool = False,
        error: dict[str, Any] | None = None,
        violation: str | None = None,
        result: Any = None,
        duration: float | None = None,
        reserved_wall: float | None = None,
        started_wall: float | None = None,
    ) -> Attempt:
        """The Attempt of a job's final outcome (``run_outcome``: how the run itself ended, if
        not the same). Its Finish carries the ledger record, and a dead letter if ``dead`` (a
        fail-fast swarm's member dead-lettered also cancels its siblings)."""
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
            duration_s=duration,
            reserved_at=reserved_wall,
            started_at=started_wall,
        ).encode()
        if not dead:
            finish = Finish(job.id, Disposition.DONE, record=record, handle=reserved.handle)
        else:
            finish = _dead_letter(job.id, reserved.handle, record, error, job.swarm_id if job.fail_fast else None)
        return Attempt(
            reserved,
            finish,
            job.agent,
            run_outcome or outcome,
            outcome,
            duration or 0.0,
            violation,
            job=job,
            finished_at=now,
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
