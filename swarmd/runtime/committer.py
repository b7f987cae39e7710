"""The outcome committer: group commits of finished attempts.

Job tasks hand their `Attempt` over as they end (`hand_over`, no await). The committer writes
every attempt gathered since its last commit in ONE `backend.finish` call (ledger entries and
lease removals together, in one transaction or script), then tells the worker what was
committed: metrics count an outcome only once it is committed. A commit that fails is
retried, with backoff, until it succeeds; meanwhile `Health.commit_error` says why, which
pauses reservations and makes /readyz fail.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final

import structlog

from swarmd.errors import error_text
from swarmd.queue.base import FinishReport, QueueBackend
from swarmd.runtime.execution import Attempt
from swarmd.runtime.health import Health
from swarmd.telemetry.metrics import Metrics

log = structlog.get_logger("swarmd.worker")

#: Seconds before the first retry of a failed commit; each further failure doubles it, up to
#: COMMIT_RETRY_MAX.
COMMIT_RETRY_FIRST: Final = 0.05
COMMIT_RETRY_MAX: Final = 2.0
#: Longest a commit waits for still-running handlers to join it (see Committer._linger).
COMMIT_LINGER: Final = 0.0005


class Committer:
    """Commits handed-over attempts in groups, retrying a failed commit until it succeeds."""

    def __init__(
        self,
        backend: QueueBackend,
        metrics: Metrics,
        health: Health,
        *,
        batch_size: int,
        in_flight: Callable[[], int],
        committed: Callable[[list[Attempt], FinishReport], None],
        recovered: Callable[[], None],
    ) -> None:
        """``batch_size``: a group this large commits without lingering; ``in_flight``: how
        many job tasks run (lingering waits only while some do); ``committed`` is called after
        each commit with its attempts and report; ``recovered`` once commits succeed again
        after failing."""
        self.backend = backend
        self.metrics = metrics
        self.health = health
        self.batch_size = batch_size
        self._in_flight = in_flight
        self._committed = committed
        self._recovered = recovered
        #: Attempts handed over and not yet taken into a commit.
        self._pending: list[Attempt] = []
        #: Attempts handed over and not yet committed (pending, or in the commit under way).
        self.uncommitted = 0
        self._have_pending = asyncio.Event()
        #: Set by the worker whenever a job task ends; only `_linger` waits on it.
        self.job_ended = asyncio.Event()
        self._closed = False

    def hand_over(self, attempt: Attempt) -> None:
        """Queue an attempt for the next commit."""
        self._pending.append(attempt)
        self.uncommitted += 1
        self._have_pending.set()

    def take_pending(self) -> list[Attempt]:
        """Take back every attempt handed over and not yet in a commit (the worker crashed, and
        commits them itself)."""
        pending, self._pending = self._pending, []
        self.uncommitted -= len(pending)
        return pending

    def close(self) -> None:
        """Let `run` return once everything handed over is committed (nothing more will be)."""
        self._closed = True
        self._have_pending.set()

    async def run(self) -> None:
        """Commit until closed and everything handed over is committed."""
        while True:
            # Re-check before every wait (no await between the check and the wait): a wake-up
            # set while a commit was running is never lost to a later clear().
            if not self._pending:
                if self._closed:
                    return
                self._have_pending.clear()
                await self._have_pending.wait()
                continue
            await self._linger()
            batch, self._pending = self._pending, []
            report = await self._commit(batch)
            self.uncommitted -= len(batch)
            self._committed(batch, report)

    async def _commit(self, batch: list[Attempt]) -> FinishReport:
        """Write one group in one backend call, retrying until it succeeds."""
        delay = COMMIT_RETRY_FIRST
        while True:
            started = time.perf_counter()
            try:
                report = await self.backend.finish([attempt.finish for attempt in batch])
            except Exception as exc:
                self.health.commit_error = error_text(exc)
                log.error("commit_failed", error=self.health.commit_error, jobs=len(batch), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, COMMIT_RETRY_MAX)
                continue
            break
        if self.health.commit_error is not None:
            log.info("commit_recovered")
            self.health.commit_error = None
            self._recovered()
        self.metrics.observe_ledger_commit(time.perf_counter() - started)
        if report.ledger_index is not None:
            self.metrics.set_ledger_index(report.ledger_index)
        return report

    async def _linger(self) -> None:
        """Group commit: while other handlers still run, wait up to COMMIT_LINGER for them to
        finish too, so that jobs ending together share one commit instead of queueing behind it."""
        in_flight = self._in_flight
        if not in_flight() or len(self._pending) >= self.batch_size:
            return
        deadline = time.perf_counter() + COMMIT_LINGER
        while in_flight() and time.perf_counter() < deadline and len(self._pending) < self.batch_size:
            self.job_ended.clear()
            try:
                await asyncio.wait_for(self.job_ended.wait(), max(0.0, deadline - time.perf_counter()))
            except TimeoutError:
                return
