"""Metrics of committed attempts: outcomes, identity violations, refusals and swarm overhead.

An outcome is counted once it is committed, never before (a commit that fails and is retried
counts once). A swarm's overhead — max(finished_at) - min(reserved_at) - max(duration) of its
members, the three times its ledger entries record — is observed when the final outcome of
its last member is committed here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from swarmd.model import Outcome
from swarmd.queue.base import Reserved
from swarmd.runtime.execution import Attempt
from swarmd.telemetry.metrics import Metrics
from swarmd.telemetry.tracing import Tracing

#: A swarm not complete this long after its first reservation is no longer tracked.
SWARM_TRACK_SECONDS: Final = 3600.0


@dataclass(slots=True)
class _SwarmTrack:
    """What the worker saw of one swarm, to measure its overhead when its last member ends."""

    size: int
    #: Wall-clock times, the same the ledger entries record (reserved_at, finished_at).
    first_reserved: float
    last_finished: float = 0.0
    longest: float = 0.0
    done: int = 0


class OutcomeMetrics:
    """Counts committed attempts and measures the overhead of the swarms this worker ran."""

    __slots__ = ("_swarms", "metrics", "tracing")

    def __init__(self, metrics: Metrics, tracing: Tracing | None = None) -> None:
        self.metrics = metrics
        #: Gives the exemplar of a swarm's overhead: its swarm span (None: no exemplars).
        self.tracing = tracing
        self._swarms: dict[str, _SwarmTrack] = {}

    def reserved(self, batch: Iterable[Reserved], reserved_wall: float) -> None:
        """Start tracking the swarms of jobs just reserved (from their first reservation)."""
        swarms = self._swarms
        for reserved in batch:
            job = reserved.job
            if job is not None and job.swarm_id is not None and job.swarm_size:
                swarms.setdefault(job.swarm_id, _SwarmTrack(job.swarm_size, reserved_wall))

    def count(self, batch: list[Attempt]) -> None:
        """Metrics for committed attempts: outcomes, identity violations, swarm overhead."""
        metrics = self.metrics
        for attempt in batch:
            job = attempt.job
            if attempt.finish.cancel_swarm is not None:
                # Its queued members end in the backend, unseen here: the swarm cannot complete.
                self._swarms.pop(attempt.finish.cancel_swarm, None)
            if attempt.rejected is not None:
                metrics.reject(attempt.rejected)
                if job is not None and job.swarm_id is not None:
                    self._swarm_member_done(job.swarm_id, attempt)
                continue
            if attempt.agent is None or attempt.run_outcome is None:
                continue  # released without running: nothing happened
            agent_metrics = metrics.agent(attempt.agent)
            agent_metrics.record(attempt.run_outcome, attempt.duration, attempt.exemplar)
            if attempt.final is not None and attempt.final is not attempt.run_outcome:
                agent_metrics.jobs[attempt.final].inc()
            if attempt.violation is not None:
                agent_metrics.identity_violations.inc()
            if job is not None and job.swarm_id is not None and attempt.final is not Outcome.RETRIED:
                self._swarm_member_done(job.swarm_id, attempt)

    def forget_stale_swarms(self) -> None:
        """Drop swarms this worker will never see complete (members run by other daemons, or
        cancelled while queued), so that tracking them cannot grow without bound."""
        horizon = time.time() - SWARM_TRACK_SECONDS
        for swarm_id in [sid for sid, track in self._swarms.items() if track.first_reserved < horizon]:
            del self._swarms[swarm_id]

    def _swarm_member_done(self, swarm_id: str, attempt: Attempt) -> None:
        """Observe the swarm's overhead if this was the final outcome of its last member."""
        track = self._swarms.get(swarm_id)
        if track is None:
            return
        track.done += 1
        track.longest = max(track.longest, attempt.duration)
        track.last_finished = max(track.last_finished, attempt.finished_at)
        if track.done >= track.size:
            del self._swarms[swarm_id]
            exemplar = None
            if self.tracing is not None and attempt.job is not None:
                exemplar = self.tracing.swarm_exemplar(swarm_id, attempt.job.traceparent)
            overhead = max(0.0, track.last_finished - track.first_reserved - track.longest)
            self.metrics.observe_swarm_overhead(overhead, exemplar)
