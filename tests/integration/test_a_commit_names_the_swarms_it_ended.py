"""`FinishReport.swarms_ended` names a swarm in the one commit that recorded its last outcome,
on both backends, and once across several daemons sharing one Redis.

SQLite in the test's tmp_path; Redis at 127.0.0.1:6379 under a key prefix of its own (deleted
afterwards), skipped without Redis and failed instead with ``SWARMD_TEST_STRICT=1``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.backends import outcome_record
from support.services import forget_prefix, require_redis

from swarmd.model import Job, new_job
from swarmd.queue.base import Disposition, Finish, QueueBackend, Reserved
from swarmd.queue.sqlite.backend import SqliteBackend

LEASE = 30.0


class Store:
    """Opens backends on one store: a SQLite state dir, or a Redis prefix."""

    def __init__(self, tmp_path: Path, url: str = "") -> None:
        self.tmp_path, self.url = tmp_path, url
        self.prefix = f"swarmd-test-{os.urandom(5).hex()}"

    @contextlib.asynccontextmanager
    async def opened(self, owner: str | None = None) -> AsyncIterator[QueueBackend]:
        backend: QueueBackend
        if not self.url:
            backend = SqliteBackend(self.tmp_path, owner=owner)
        else:
            from swarmd.queue.redis.backend import RedisBackend  # noqa: PLC0415 - redis-py is optional

            backend = RedisBackend(self.url, prefix=self.prefix, owner=owner)
        await backend.open()
        try:
            yield backend
        finally:
            await backend.close()

    def clean(self) -> None:
        if self.url:
            forget_prefix(self.url, self.prefix)


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    found = Store(tmp_path, require_redis() if request.param == "redis" else "")
    try:
        yield found
    finally:
        found.clean()


@pytest.fixture
def redis_store(tmp_path: Path) -> Iterator[Store]:
    found = Store(tmp_path, require_redis())
    try:
        yield found
    finally:
        found.clean()


def swarm(swarm_id: str, size: int, **fields: Any) -> list[Job]:
    return [new_job(agent="echo", gid=f"gid-{i}", swarm_id=swarm_id, swarm_size=size, **fields) for i in range(size)]


def finish(reserved: Reserved, disposition: Disposition = Disposition.DONE, **fields: Any) -> Finish:
    outcome = {Disposition.DONE: "succeeded", Disposition.DEAD: "dead_lettered"}.get(disposition)
    record = None
    if outcome is not None:
        assert reserved.job is not None
        record = outcome_record(reserved, outcome)
    swarm_id = reserved.job.swarm_id if record is not None and reserved.job is not None else None
    return Finish(
        reserved.job_id,
        disposition,
        record=record,
        handle=reserved.handle,
        swarm_id=swarm_id,
        outcome=outcome,
        **fields,
    )


async def test_only_the_commit_of_the_last_outcome_names_the_swarm(store: Store) -> None:
    async with store.opened() as q:
        await q.submit([*swarm("s-1", 3), new_job(agent="echo", gid="lone")])
        first, second, third, lone = await q.reserve(4, lease=LEASE)
        assert (await q.finish([finish(first), finish(lone)])).swarms_ended == []
        # A retry records nothing; a dead letter is an outcome.
        assert (await q.finish([finish(second, Disposition.RETRY)])).swarms_ended == []
        assert (await q.finish([finish(third, Disposition.DEAD, error='{"type": "Boom"}')])).swarms_ended == []
        (again,) = await q.reserve(1, lease=LEASE)
        assert again.job_id == second.job_id
        assert (await q.finish([finish(again)])).swarms_ended == ["s-1"]
        assert (await q.finish([finish(again)])).swarms_ended == []  # recorded already: not again


async def test_a_fail_fast_swarm_ends_with_its_last_running_member(store: Store) -> None:
    async with store.opened() as q:
        await q.submit(swarm("s-ff", 4, fail_fast=True))
        failing, running = await q.reserve(2, lease=LEASE)
        report = await q.finish([finish(failing, Disposition.DEAD, error='{"type": "Boom"}', cancel_swarm="s-ff")])
        assert report.swarms_ended == []  # the running member has no outcome yet
        assert (await q.finish([finish(running)])).swarms_ended == ["s-ff"]


async def test_daemons_sharing_redis_name_each_swarm_once(redis_store: Store) -> None:
    swarms = [f"s-{n}" for n in range(20)]
    jobs = [job for swarm_id in swarms for job in swarm(swarm_id, 5)]
    ended: Counter[str] = Counter()
    async with contextlib.AsyncExitStack() as stack:
        daemons = [await stack.enter_async_context(redis_store.opened(owner=f"d{i}")) for i in range(3)]
        await daemons[0].submit(jobs)

        async def drain(q: QueueBackend) -> None:
            while batch := await q.reserve(7, lease=LEASE):
                await asyncio.sleep(0)
                ended.update((await q.finish([finish(r) for r in batch])).swarms_ended)

        await asyncio.gather(*(drain(q) for q in daemons))
    assert ended == Counter(swarms)
