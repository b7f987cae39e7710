"""Issue 16: ``ctx.submit`` drafts children at once (a bad one raises in the handler), names
the same children on every attempt, and refuses outside a handler the daemon runs."""

from __future__ import annotations

import msgspec
import pytest
import structlog

from swarmd import JobContext, JobValidationError, UnknownAgentError, WorkflowError
from swarmd.model import new_job
from swarmd.runtime.spawning import Spawning
from swarmd.telemetry.tracing import Tracing


async def _no_outcomes(swarm_id: str) -> list[object]:
    return []


def _spawning() -> Spawning:
    known = {"echo", "aggregate"}
    return Spawning(
        Tracing(None),
        "default",
        known_agent=known.__contains__,
        agents=lambda: sorted(known),
        swarm_outcomes=_no_outcomes,  # type: ignore[arg-type]
    )


def _context(attempt: int, spawning: Spawning | None = None) -> JobContext:
    job = msgspec.structs.replace(
        new_job(job_id="0123456789abcdef0123456789abcdef", agent="planner", gid="GID-P"), attempt=attempt
    )
    return JobContext(job, structlog.get_logger(), spawning)


def test_every_attempt_names_the_same_children_and_swarm_and_follow_up() -> None:
    spawning = _spawning()
    named = []
    for attempt in (1, 2):
        ctx = _context(attempt, spawning)
        one = ctx.submit("echo", gid="GID-C", payload={"n": 0})
        swarm = ctx.submit_many(
            [{"agent": "echo", "gid": "GID-C"}] * 2, swarm=True, then={"agent": "aggregate", "gid": "GID-A"}
        )
        named.append((one, list(swarm), swarm.swarm_id, swarm.follow_up))
        assert ctx.children is not None and [job.id for job in ctx.children] == [one, *swarm]
        assert all(job.parent_id == ctx.job.id for job in ctx.children)
        assert ctx.plans is not None and ctx.plans[0].then.follows == swarm.swarm_id
    assert named[0] == named[1]
    one, members, swarm_id, follow_up = named[0]
    assert len({one, *members, swarm_id, follow_up}) == 5  # all distinct
    assert one[:12] == "0123456789ab"  # a family sorts with its root


def test_a_bad_child_raises_in_the_handler_and_takes_no_position() -> None:
    ctx = _context(1, _spawning())
    with pytest.raises(UnknownAgentError, match="nobody"):
        ctx.submit("nobody", gid="GID-C")
    with pytest.raises(JobValidationError, match="idempotency_key"):
        ctx.submit("echo", gid="GID-C", idempotency_key="mine")
    with pytest.raises(JobValidationError, match="job_id"):
        ctx.submit("echo", gid="GID-C", job_id="abc")
    with pytest.raises(UnknownAgentError):
        ctx.submit_many([{"agent": "echo", "gid": "G"}], swarm=True, then={"agent": "nobody", "gid": "G"})
    with pytest.raises(JobValidationError, match=r"then\.gid"):
        ctx.submit_many([{"agent": "echo", "gid": "G"}], swarm=True, then={"agent": "echo", "gid": "bad gid"})
    assert ctx.children is None and ctx.positions == 0
    first = ctx.submit("echo", gid="GID-C")
    assert first == _context(2, _spawning()).submit("echo", gid="GID-C")


def test_submit_outside_a_handler_the_daemon_runs_or_after_it_returned_is_refused() -> None:
    with pytest.raises(WorkflowError, match="only in a handler the daemon runs"):
        _context(1).submit("echo", gid="GID-C")
    ctx = _context(1, _spawning())
    ctx.closed = True  # what the runner does when the handler returns
    with pytest.raises(WorkflowError, match="after the handler"):
        ctx.submit("echo", gid="GID-C")
    assert ctx.children is None


async def test_swarm_results_is_for_a_follow_up_only() -> None:
    with pytest.raises(WorkflowError, match="not the follow-up"):
        await _context(1, _spawning()).swarm_results()
