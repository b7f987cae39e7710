"""Issue 17, gap 2: archived job ids are remembered for a horizon (``archived_id_ttl``), then
forgotten, on both backends (a real SQLite file; the real Redis at 127.0.0.1:6379).

Within the horizon an archived id is refused at submit and a late outcome of it (a lost lease)
writes nothing; past it the id is no longer found, whether or not the expiry has run, and the
index gives its space back: SQLite's ``archived_ids`` rows are deleted by the retention's
bounded steps, Redis's generation set has an EXPIREAT at the generation's end and is gone once
that has passed. Time is injected (``now``), never slept: "after the horizon" is either a
lookup at a later ``now`` or ids archived with a ``now`` long past.
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Any

import pytest
from support.backends import make_backend, opened
from support.ledger_fill import finish_jobs
from support.services import forget_prefix, require_redis

from swarmd.errors import JobValidationError
from swarmd.ledger.records import OutcomeRecord
from swarmd.model import new_job
from swarmd.queue.archiving import Selection, archive_ledger
from swarmd.queue.base import Disposition, Finish, QueueBackend
from swarmd.queue.sqlite.backend import DB_NAME, SqliteBackend
from swarmd.runtime.retention import expire_archived_ids
from swarmd.storage.horizon import DEFAULT_HORIZON, UNIT, expires_at, generation, grain_hours

__all__ = ["make_backend"]  # the fixture, on both backends

#: The horizon these tests archive with: an hour (a grain of one hour).
HORIZON = 3600.0
#: Long enough after an archive that its generation is dead, whatever the rounding.
PAST_IT = HORIZON + (grain_hours(HORIZON) + 1) * UNIT


def _sqlite_rows(backend: QueueBackend) -> list[tuple[int, int]]:
    assert isinstance(backend, SqliteBackend)
    with sqlite3.connect(backend.state_dir / DB_NAME) as conn:
        return [(int(g), int(k)) for g, k in conn.execute("SELECT gen, id_hash FROM archived_ids")]


async def _generation_keys(backend: Any) -> dict[str, int]:
    """Redis: each generation set of archived ids and its TTL in seconds (-2: gone)."""
    keys = [key async for key in backend.client.scan_iter(match=f"{backend._p}ledger:archived:*", count=1000)]
    sets = [key for key in keys if not key.endswith(b":gens")]
    return {key.decode(): int(await backend.client.ttl(key)) for key in sets}


async def _finished_job(backend: QueueBackend) -> tuple[str, Finish]:
    """A job submitted, reserved and finished; the Finish that recorded it (to replay late)."""
    job = new_job(agent="echo", gid="GID-x", payload={})
    await backend.submit([job])
    (held,) = await backend.reserve(1, lease=60)
    record = OutcomeRecord(
        job_id=job.id, gid=job.gid, agent=job.agent, outcome="succeeded", attempt=1, finished_at=time.time()
    ).encode()
    finish = Finish(job.id, Disposition.DONE, record=record, handle=held.handle)
    await backend.finish([finish])
    return job.id, finish


async def test_within_the_horizon_an_archived_id_is_refused_and_a_late_outcome_writes_nothing(
    make_backend: Any,
) -> None:
    async with opened(make_backend) as backend:
        ids = await finish_jobs(backend, 10)
        job_id, finish = await _finished_job(backend)
        start = time.time()
        run = await archive_ledger(backend, Selection(), None, remember_for=HORIZON)
        end = time.time()
        assert run.entries == 11 and await backend.ledger_entries() == []
        with pytest.raises(JobValidationError, match=f"job {job_id} already finished .its ledger entry is archived"):
            await backend.submit([new_job(agent="echo", gid="GID-x", payload={}, job_id=job_id)])
        await backend.finish([finish])  # the same outcome again, as after a lost lease
        assert await backend.ledger_entries() == []
        # Remembered for the whole horizon, forgotten by the end of its generation.
        assert await backend.archived_ids([*ids, job_id], now=start + HORIZON - 1) == {*ids, job_id}
        assert await backend.archived_ids([*ids, job_id], now=end + PAST_IT) == set()
        # The index holds one generation, whose end is the horizon rounded up to the grain.
        gens = {generation(start, HORIZON), generation(end, HORIZON)}
        if backend.name == "sqlite":
            rows = _sqlite_rows(backend)
            assert len(rows) == 11 and {gen for gen, _ in rows} <= gens
        else:
            ttls = await _generation_keys(backend)
            assert len(ttls) == 1 and {key.rsplit(":", 1)[1] for key in ttls} <= {str(gen) for gen in gens}
            (ttl,) = ttls.values()
            assert HORIZON - 5 <= ttl <= PAST_IT, ttl
            assert await backend.client.scard(next(iter(ttls))) == 11


async def test_past_the_horizon_the_id_is_forgotten_and_may_make_a_new_job(make_backend: Any) -> None:
    """Ids archived long ago (``now`` a horizon and more in the past): no longer refused, and
    on Redis their generation set is gone at once (its EXPIREAT has passed)."""
    async with opened(make_backend) as backend:
        ids = await finish_jobs(backend, 5)
        long_ago = time.time() - PAST_IT
        await backend.forget_ledger(4, None, remember_for=HORIZON, now=long_ago)
        assert await backend.archived_ids(ids) == set()
        again = new_job(agent="echo", gid="GID-x", payload={}, job_id=ids[0])
        assert await backend.submit([again]) == [ids[0]]  # a new job, under the old id
        if backend.name == "sqlite":  # still on disk until the retention's expiry deletes it
            assert len(_sqlite_rows(backend)) == 5
            assert await expire_archived_ids(backend) == 5
            assert _sqlite_rows(backend) == []
        else:
            assert await _generation_keys(backend) == {}
            assert await backend.expire_archived_ids(1000) == 0
            assert await backend.client.exists(backend._p + "ledger:archived:gens") == 0


async def test_the_expiry_forgets_only_dead_generations_in_bounded_steps(make_backend: Any) -> None:
    """Two archives a horizon apart: the expiry at a time between their ends forgets the first
    and keeps the second; each call forgets at most its limit."""
    async with opened(make_backend) as backend:
        ids = await finish_jobs(backend, 30)
        t0 = time.time()
        first = await backend.forget_ledger(19, None, remember_for=HORIZON, now=t0)
        await backend.forget_ledger(29, first, remember_for=HORIZON, now=t0 + PAST_IT)
        between = t0 + PAST_IT + 1
        assert await backend.archived_ids(ids, now=between) == set(ids[20:])
        if backend.name == "sqlite":
            assert await backend.expire_archived_ids(7, now=t0 + HORIZON - 1) == 0  # nothing dead yet
            assert await backend.expire_archived_ids(7, now=between) == 7
            assert await expire_archived_ids(backend, now=between, chunk=7) == 13
            rows = _sqlite_rows(backend)
            assert len(rows) == 10 and {gen for gen, _ in rows} == {generation(t0 + PAST_IT, HORIZON)}
        else:  # Redis keeps both sets until their EXPIREAT: each has its own
            ttls = await _generation_keys(backend)
            ends = sorted(int(key.rsplit(":", 1)[1]) for key in ttls)
            assert ends == sorted({generation(t0, HORIZON), generation(t0 + PAST_IT, HORIZON)})
            assert all(ttl > 0 for ttl in ttls.values())
            assert expires_at(ends[0]) < between
        assert await backend.archived_ids(ids, now=between) == set(ids[20:])


@pytest.mark.redis
async def test_a_redis_prefix_from_before_the_horizon_keeps_its_archived_ids_refused() -> None:
    """A prefix at layout 4 (one set ``ledger:archived``, kept forever) is migrated: the set
    becomes the generation of the default horizon, counted from the upgrade, with its EXPIREAT;
    its ids stay refused."""
    from swarmd.queue.redis import migrations  # noqa: PLC0415 - redis-py is optional
    from swarmd.queue.redis.backend import RedisBackend  # noqa: PLC0415

    url = require_redis()
    prefix = f"swarmd-test-{os.urandom(5).hex()}"
    p = f"{{{prefix}}}:"
    backend = RedisBackend(url, prefix=prefix)
    await backend.open()
    try:
        ids = await finish_jobs(backend, 5)
        await archive_ledger(backend, Selection(before=3), None)
        client = backend.client
        # Back to layout 4: every generation's ids in the one set, no generations.
        sets = list((await _generation_keys(backend)).keys())
        await client.sunionstore(p + "ledger:archived", sets)
        await client.delete(*sets, p + "ledger:archived:gens")
        await client.set(p + migrations.VERSION_KEY, migrations.known_version() - 1)
        assert await client.scard(p + "ledger:archived") == 3
    finally:
        await backend.close()
    before = time.time()
    backend = RedisBackend(url, prefix=prefix)
    await backend.open()
    try:
        after = time.time()
        client = backend.client
        assert await client.get(p + migrations.VERSION_KEY) == str(migrations.known_version()).encode()
        assert await client.exists(p + "ledger:archived") == 0
        assert await backend.archived_ids(ids) == set(ids[:3])
        with pytest.raises(JobValidationError, match=f"job {ids[1]} already finished .its ledger entry is archived"):
            await backend.submit([new_job(agent="echo", gid="GID-x", payload={}, job_id=ids[1])])
        ttls = await _generation_keys(backend)
        gens = {generation(before, DEFAULT_HORIZON), generation(after, DEFAULT_HORIZON)}
        assert len(ttls) == 1 and int(next(iter(ttls)).rsplit(":", 1)[1]) in gens
        (ttl,) = ttls.values()
        assert DEFAULT_HORIZON - 5 <= ttl <= DEFAULT_HORIZON + (grain_hours(DEFAULT_HORIZON) + 1) * UNIT
    finally:
        await backend.close()
        forget_prefix(url, prefix)
