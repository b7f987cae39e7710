"""The in-process swarm dispatcher: swarmd as a library, without a queue or a daemon.

::

    d = AsyncSwarmDispatcher(max_concurrent=50, fail_fast=True, ledger=None)
    results = await d.dispatch([AgentTask(gid="GID-01", fn=work), ...])

Each task runs in its own asyncio task inside one TaskGroup, with its GID bound in the
identity contextvar, at most ``max_concurrent`` at once. Outcomes (and, with a ledger, one
ledger entry per task) are recorded; ``d.metrics`` describes the last dispatch.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from swarmd.identity import current_gid, identity_violation
from swarmd.ledger.chain import Ledger

log = structlog.get_logger("swarmd.dispatcher")


@dataclass(slots=True)
class AgentTask:
    """One agent's unit of work: ``fn()`` returns an awaitable; ``gid`` is who it speaks for."""

    gid: str
    fn: Callable[[], Awaitable[Any]]
    name: str | None = None


@dataclass(slots=True)
class TaskResult:
    """How one task ended. ``ok`` is True only for a task that returned normally."""

    gid: str
    name: str
    ok: bool
    value: Any = None
    exception: BaseException | None = None
    duration_s: float = 0.0
    cancelled: bool = False
    #: Why the task broke the identity check (see `swarmd.identity`), or None.
    identity_violation: str | None = None
    #: The task's ledger index, when the dispatcher has a ledger.
    ledger_index: int | None = None


@dataclass(slots=True)
class DispatchMetrics:
    """What happened in the last dispatch."""

    total_tasks: int = 0
    completed_tasks: int = 0
    failed_tasks: int = 0
    cancelled_tasks: int = 0
    concurrent_peak: int = 0
    #: Wall time of the dispatch minus the longest task's duration.
    scheduling_overhead_s: float = 0.0
    wall_time_s: float = 0.0
    #: Each task's duration in seconds, in task order (0.0 for a task that never started).
    task_durations: list[float] = field(default_factory=list)
    identity_preservation_violations: int = 0


class AsyncSwarmDispatcher:
    """Runs a swarm of agent tasks under one TaskGroup and a concurrency limit."""

    def __init__(self, max_concurrent: int = 50, fail_fast: bool = True, ledger: Ledger | None = None) -> None:
        if not isinstance(max_concurrent, int) or max_concurrent < 1:
            raise ValueError(f"max_concurrent must be a positive integer, not {max_concurrent!r}")
        self.max_concurrent = max_concurrent
        self.fail_fast = fail_fast
        self.ledger = ledger
        self.metrics = DispatchMetrics()

    async def dispatch(self, tasks: Sequence[AgentTask]) -> list[TaskResult]:
        """Run every task; return their results in task order.

        With ``fail_fast`` the first exception cancels the other tasks and is raised (as the
        ExceptionGroup TaskGroup raises); without it every task runs and each result tells.
        """
        tasks = list(tasks)
        if not tasks:
            return []
        for position, task in enumerate(tasks):
            if not isinstance(task, AgentTask):
                raise TypeError(f"tasks[{position}] is {type(task).__name__}, not AgentTask")
            if not isinstance(task.gid, str) or not task.gid:
                raise ValueError(f"tasks[{position}].gid must be a non-empty string")
        swarm = _Swarm(self, tasks)
        self.metrics = swarm.metrics
        await swarm.run()
        return swarm.final_results()


class _Swarm:
    """The state of one dispatch.

    A task's ledger entry is queued for the ledger's group commit as the task ends (the
    ledger's ``append_soon``); the task does not wait for it. The dispatch returns once every
    entry is committed: the last task's commit is still on the critical path, but N tasks no
    longer each wake up after it.
    """

    def __init__(self, dispatcher: AsyncSwarmDispatcher, tasks: list[AgentTask]) -> None:
        self.dispatcher = dispatcher
        self.tasks = tasks
        self.results: list[TaskResult | None] = [None] * len(tasks)
        self.metrics = DispatchMetrics(total_tasks=len(tasks), task_durations=[0.0] * len(tasks))
        #: The concurrency limit; None when every task fits under it, so that none ever waits
        #: (a semaphore no one waits on costs an acquire and a release per task, for nothing).
        self.slots = asyncio.Semaphore(dispatcher.max_concurrent) if dispatcher.max_concurrent < len(tasks) else None
        self.in_flight = 0
        #: Results whose ledger entry is queued, with the future of its index.
        self.unrecorded: deque[tuple[TaskResult, asyncio.Future[int]]] = deque()
        #: The ledger's append_soon, if it has one (looked up once, not per task).
        self.append_soon: Callable[[dict[str, Any]], asyncio.Future[int]] | None = getattr(
            dispatcher.ledger, "append_soon", None
        )

    def name_of(self, position: int) -> str:
        return self.tasks[position].name or f"task-{position}"

    async def run(self) -> None:
        start = time.perf_counter()
        try:
            try:
                async with asyncio.TaskGroup() as group:
                    for position in range(len(self.tasks)):
                        group.create_task(self.run_one(position))
            except BaseExceptionGroup as failed:
                self.record_cancelled()
                try:
                    await self.recorded()
                except Exception as ledger_error:  # the tasks' failures and the ledger's, together
                    raise BaseExceptionGroup(
                        "swarm failed, and not every ledger entry was committed", [*failed.exceptions, ledger_error]
                    ) from None
                raise
            await self.recorded()
        finally:
            self.finish(start)
            self.abandon()

    def finish(self, start: float) -> None:
        metrics = self.metrics
        metrics.wall_time_s = time.perf_counter() - start
        metrics.scheduling_overhead_s = max(0.0, metrics.wall_time_s - max(metrics.task_durations))

    async def run_one(self, position: int) -> None:
        task = self.tasks[position]
        metrics = self.metrics
        slots = self.slots
        if slots is not None:
            await slots.acquire()
        try:
            self.in_flight += 1
            metrics.concurrent_peak = max(metrics.concurrent_peak, self.in_flight)
            current_gid.set(task.gid)  # this task's own context: children inherit it
            started = time.perf_counter()
            try:
                value = await task.fn()
            except Exception as exc:
                duration = metrics.task_durations[position] = time.perf_counter() - started
                metrics.failed_tasks += 1
                result = TaskResult(task.gid, self.name_of(position), False, exception=exc, duration_s=duration)
                self.results[position] = result
                self.record(result)
                if self.dispatcher.fail_fast:
                    raise
                return
            finally:
                self.in_flight -= 1
            duration = metrics.task_durations[position] = time.perf_counter() - started
        finally:
            if slots is not None:
                slots.release()
        violation = identity_violation(task.gid, value)
        if violation is not None:
            metrics.identity_preservation_violations += 1
            log.warning("identity_violation", gid=task.gid, task=self.name_of(position), reason=violation)
        metrics.completed_tasks += 1
        result = TaskResult(task.gid, self.name_of(position), True, value, None, duration, False, violation)
        self.results[position] = result
        self.record(result)

    def record(self, result: TaskResult) -> None:
        """Queue the result's ledger entry for the ledger's next group commit; the task does not
        wait for it (no ledger: nothing to do)."""
        ledger = self.dispatcher.ledger
        if ledger is None:
            return
        outcome = "succeeded" if result.ok else "cancelled" if result.cancelled else "failed"
        entry: dict[str, Any] = {
            "agent_gid": result.gid,
            "task": result.name,
            "outcome": outcome,
            "duration_s": round(result.duration_s, 9),
        }
        if result.exception is not None and not result.cancelled:
            entry["error"] = f"{type(result.exception).__name__}: {result.exception}"
        if result.identity_violation is not None:
            entry["identity_violation"] = result.identity_violation
        append_soon = self.append_soon
        committed = append_soon(entry) if append_soon is not None else asyncio.ensure_future(ledger.append(entry))
        self.unrecorded.append((result, committed))

    async def recorded(self) -> None:
        """Return once every queued entry is committed; then raise the first commit error, if
        any (every future is awaited, so that none is left with an unretrieved error)."""
        error: Exception | None = None
        while self.unrecorded:
            result, committed = self.unrecorded.popleft()
            try:
                result.ledger_index = await committed
            except Exception as exc:
                error = error or exc
        if error is not None:
            raise error

    def abandon(self) -> None:
        """Leaving early (cancelled from outside, or on a commit error): entries still queued are
        committed or not without anyone waiting; their errors are retrieved, not reported as
        never retrieved."""
        while self.unrecorded:
            _, committed = self.unrecorded.popleft()
            committed.add_done_callback(_retrieve)

    def record_cancelled(self) -> None:
        """After a fail-fast abort: every task that did not finish ends ``cancelled``."""
        for position, task in enumerate(self.tasks):
            if self.results[position] is None:
                result = TaskResult(
                    task.gid,
                    self.name_of(position),
                    False,
                    cancelled=True,
                    exception=asyncio.CancelledError(),
                )
                self.results[position] = result
                self.metrics.cancelled_tasks += 1
                self.record(result)

    def final_results(self) -> list[TaskResult]:
        return [result for result in self.results if result is not None]


def _retrieve(future: asyncio.Future[int]) -> None:
    if not future.cancelled():
        future.exception()
