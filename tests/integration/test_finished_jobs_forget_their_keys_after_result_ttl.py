"""What a finished job leaves behind is forgotten once it is older than ``result_ttl``, on both
backends: its idempotency key (resubmitting the key then makes a new job), and on Redis the
member set of its swarm, once no member is queued or running. A queued job's key never expires.

Driven through the backend API on a real SQLite file and the real Redis (a key prefix of its
own, deleted afterwards; skipped without Redis, failing under SWARMD_TEST_STRICT=1).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from support.backends import make_backend, outcome_record
from support.services import forget_prefix, require_redis

from swarmd.errors import JobNotFound
from swarmd.model import Job, new_job
from swarmd.queue.base import Disposition, Finish, QueueBackend, Reserved
from swarmd.runtime.retention import expire_results

__all__ = ["make_backend"]  # the fixture, on both backends

#: ``older_than`` that makes everything finished so far expired (a finish and the expiry that
#: follows it may read the same clock tick; one second ahead of it leaves no doubt).
ALL_FINISHED = -1.0
#: ``older_than`` no job of a test reaches.
AN_HOUR = 3600.0


@pytest.fixture
async def backend(make_backend: Any) -> AsyncIterator[QueueBackend]:
    opened: QueueBackend = make_backend()
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


def job(**fields: Any) -> Job:
    return new_job(agent="echo", gid="gid-1", payload={"n": 1}, **fields)


def finish(reserved: Reserved, disposition: Disposition = Disposition.DONE) -> Finish:
    record = outcome_record(reserved, "succeeded" if disposition is Disposition.DONE else "dead_lettered")
    error = '{"type": "Boom"}' if disposition is Disposition.DEAD else None
    return Finish(reserved.job_id, disposition, record=record, error=error, handle=reserved.handle)


async def run_all(backend: QueueBackend, disposition: Disposition = Disposition.DONE) -> list[str]:
    reserved = await backend.reserve(10_000, lease=30.0)
    await backend.finish([finish(r, disposition) for r in reserved])
    return [r.job_id for r in reserved]


async def test_a_finished_jobs_key_is_kept_for_result_ttl_then_forgotten(backend: QueueBackend) -> None:
    first = job(idempotency_key="order-1")
    assert await backend.submit([first]) == [first.id]
    assert await run_all(backend) == [first.id]

    assert await backend.expire_finished(AN_HOUR, 1000) == 0
    again = job(idempotency_key="order-1")
    assert await backend.submit([again]) == [first.id], "within result_ttl the key still names the first job"

    assert await backend.expire_finished(ALL_FINISHED, 1000) == 1
    third = job(idempotency_key="order-1")
    assert await backend.submit([third]) == [third.id], "after result_ttl the key makes a new job"
    assert (await backend.status(first.id)).ledger_index is not None, "the ledger entry stays"


async def test_a_queued_jobs_key_never_expires(backend: QueueBackend) -> None:
    queued = job(idempotency_key="still-queued")
    await backend.submit([queued])

    assert await backend.expire_finished(ALL_FINISHED, 1000) == 0
    assert await backend.submit([job(idempotency_key="still-queued")]) == [queued.id]


async def test_keys_of_dead_and_cancelled_jobs_expire_too(backend: QueueBackend) -> None:
    dead, cancelled = job(idempotency_key="dies"), job(idempotency_key="cancelled")
    await backend.submit([dead])
    await run_all(backend, Disposition.DEAD)
    await backend.submit([cancelled])
    await backend.cancel(cancelled.id)

    assert await backend.expire_finished(ALL_FINISHED, 1000) == 2
    assert await backend.submit([job(idempotency_key="dies")]) != [dead.id]
    assert await backend.submit([job(idempotency_key="cancelled")]) != [cancelled.id]


async def test_expiry_forgets_at_most_its_limit_per_call_and_expire_results_loops_to_the_end(
    backend: QueueBackend,
) -> None:
    n = 2500
    await backend.submit([job(idempotency_key=f"k{i}") for i in range(n)])
    assert len(await run_all(backend)) == n

    assert await backend.expire_finished(ALL_FINISHED, 1000) == 1000
    assert await expire_results(backend, ALL_FINISHED, chunk=1000) == n - 1000
    assert await backend.expire_finished(ALL_FINISHED, 1000) == 0


@pytest.mark.redis
async def test_redis_forgets_a_finished_swarm_but_never_one_with_a_member_still_queued(tmp_path: Path) -> None:
    """(SQLite keeps swarm membership in the ledger entries: the ledger's retention.)"""
    from swarmd.queue.redis.backend import RedisBackend  # noqa: PLC0415 - redis-py is optional

    url = require_redis()
    prefix = f"swarmd-test-{os.urandom(5).hex()}"
    backend = RedisBackend(url, prefix=prefix)
    await backend.open()
    try:
        swarm = [job(swarm_id="swarm-a"), job(swarm_id="swarm-a")]
        await backend.submit(swarm[:1])
        await run_all(backend)  # one member finished ...
        await backend.submit(swarm[1:])  # ... the other still queued
        members = f"{{{prefix}}}:q:default:swarm:swarm-a"

        assert await backend.expire_finished(ALL_FINISHED, 1000) == 0
        assert await backend.client.exists(members) == 1, "a swarm with a queued member keeps its set"
        assert {info.job_id for info in await backend.swarm_status("swarm-a")} == {j.id for j in swarm}

        await run_all(backend)  # the last member ends: the swarm is finished
        assert await backend.expire_finished(AN_HOUR, 1000) == 0
        assert await backend.client.exists(members) == 1, "kept for result_ttl after its last member ended"
        assert await backend.expire_finished(ALL_FINISHED, 1000) == 1
        assert await backend.client.exists(members) == 0
        with pytest.raises(JobNotFound):  # a swarm is found by its id no longer ...
            await backend.swarm_status("swarm-a")
        assert (await backend.status(swarm[0].id)).ledger_index is not None  # ... its members by theirs
    finally:
        await backend.close()
        forget_prefix(url, prefix)
