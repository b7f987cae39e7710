"""The swarm span of each swarm a commit ended (see swarmd.telemetry.swarm_trace).

A swarm's members name its span as their parent while they run; the span itself is emitted
once, by the daemon whose commit recorded the swarm's last outcome (`FinishReport.swarms_ended`),
from the swarm's enqueue time to now.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence

from swarmd.runtime.execution import Attempt
from swarmd.telemetry.tracing import Tracing

__all__ = ["trace_ended_swarms"]


def trace_ended_swarms(tracing: Tracing, queue: str, batch: Sequence[Attempt], ended: Collection[str]) -> None:
    """Emit the span of every swarm in ``ended``, from the member of ``batch`` that ended it.

    The members of a swarm are submitted in one call and share their ``enqueued_at``: the
    member at hand gives the swarm's start, its size and its producer's ``traceparent``.
    """
    if not ended or not tracing.enabled:
        return
    wanted = set(ended)
    now = time.time()
    for attempt in batch:
        job = attempt.job
        if job is None or job.swarm_id not in wanted:
            continue
        wanted.discard(job.swarm_id)
        tracing.swarm_span(
            queue,
            job.swarm_id,
            size=job.swarm_size or 0,
            start=job.enqueued_at or now,
            end=now,
            traceparent=job.traceparent,
        )
