"""Issue 16/17: retention forgets a finished swarm's bookkeeping after result_ttl, but never that
of a swarm whose follow-up is still awaited (SQLite and the Redis at 127.0.0.1:6379)."""

from __future__ import annotations

import time

import pytest
from support.stacks import Stack, stack

from swarmd.model import new_job
from swarmd.queue.base import Disposition, Finish, Reserved
from swarmd.queue.factory import open_backend
from swarmd.workflows import plan_follow_up

__all__ = ["stack"]


async def test_retention_keeps_a_swarm_whose_follow_up_is_awaited(stack: Stack) -> None:
    backend = open_backend(stack.settings(), stack.state)
    await backend.open()
    try:
        waiting = [new_job(agent="echo", gid="G", swarm_id="swarm-awaiting", swarm_size=2) for _ in range(2)]
        plan = plan_follow_up(
            {"agent": "echo", "gid": "G"}, swarm_id="swarm-awaiting", size=2, then_when="always",
            traceparent=None, now=time.time(),
        )  # fmt: skip
        done = [new_job(agent="echo", gid="G", swarm_id="swarm-done", swarm_size=1)]
        await backend.submit(waiting, [plan])
        await backend.submit(done)
        (reserved,) = [r for r in await backend.reserve(10, lease=30) if r.job_id == done[0].id]
        from swarmd.ledger.records import OutcomeRecord  # noqa: PLC0415

        record = OutcomeRecord(
            job_id=reserved.job_id, gid="G", agent="echo", outcome="succeeded", attempt=1, finished_at=time.time(),
            swarm_id="swarm-done",
        ).encode()  # fmt: skip
        report = await backend.finish(
            [Finish(reserved.job_id, Disposition.DONE, record=record, handle=reserved.handle, swarm_id="swarm-done",
                    outcome="succeeded")]
        )  # fmt: skip
        assert report.swarms_ended == ["swarm-done"]
        # everything older than an hour from now is past its ttl
        await backend.expire_finished(older_than=-3600, limit=1000)
        assert await backend.swarm_progress("swarm-done") is None
        awaiting = await backend.swarm_progress("swarm-awaiting")
        assert awaiting is not None and (awaiting.ended, awaiting.follow_up) == (0, plan.then.id)
        assert (await backend.status(plan.then.id)).state == "awaiting"
    finally:
        await backend.close()


pytestmark = pytest.mark.slow


async def test_retention_keeps_a_swarm_whose_follow_up_is_queued_until_it_is_recorded(stack: Stack) -> None:
    """After its swarm ended, a queued follow-up still reads the swarm's outcomes: the swarm's
    bookkeeping outlives result_ttl until the follow-up's own entry is written."""
    from swarmd.ledger.records import OutcomeRecord  # noqa: PLC0415

    def finish(reserved: Reserved, swarm_id: str | None) -> Finish:
        record = OutcomeRecord(
            job_id=reserved.job_id, gid="G", agent="echo", outcome="succeeded", attempt=1, finished_at=time.time(),
            swarm_id=swarm_id,
        ).encode()  # fmt: skip
        return Finish(
            reserved.job_id, Disposition.DONE, record=record, handle=reserved.handle, swarm_id=swarm_id,
            outcome="succeeded",
        )  # fmt: skip

    backend = open_backend(stack.settings(), stack.state)
    await backend.open()
    try:
        member = new_job(agent="echo", gid="G", swarm_id="swarm-queued", swarm_size=1)
        plan = plan_follow_up(
            {"agent": "echo", "gid": "G"}, swarm_id="swarm-queued", size=1, then_when="always",
            traceparent=None, now=time.time(),
        )  # fmt: skip
        await backend.submit([member], [plan])
        (reserved,) = await backend.reserve(10, lease=30)
        report = await backend.finish([finish(reserved, "swarm-queued")])
        assert report.submitted == [plan.then.id]  # the swarm ended: its follow-up is queued
        await backend.expire_finished(older_than=-3600, limit=1000)
        assert await backend.swarm_progress("swarm-queued") is not None
        assert [entry.job_id for entry in await backend.swarm_outcomes("swarm-queued")] == [member.id]
        (follow_up,) = await backend.reserve(10, lease=30)
        await backend.finish([finish(follow_up, None)])
        await backend.expire_finished(older_than=-3600, limit=1000)
        assert await backend.swarm_progress("swarm-queued") is None  # recorded: it may go now
    finally:
        await backend.close()
