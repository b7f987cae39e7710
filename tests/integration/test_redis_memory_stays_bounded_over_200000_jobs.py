"""On Redis, what finished jobs leave outside the ledger stays bounded: 200,000 jobs with
idempotency keys, in swarms, go through submit, reserve and finish in big batches while the
expiry runs with a result_ttl shorter than a batch, and the memory of every key of the queue
except the ledger's (``ledger``, ``ledger:ids``: the ledger retention's part) stays under
`BOUND` bytes from the first batch to the last. Without expiry the idempotency keys and swarm
sets alone would take about 30 MB (about 150 bytes a job, measured).

Driven through the backend API on the real Redis (a key prefix of its own, deleted
afterwards); skipped without Redis, failing under SWARMD_TEST_STRICT=1.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from support.services import require_redis

from swarmd.ledger.records import OutcomeRecord
from swarmd.model import new_job
from swarmd.queue.base import Disposition, Finish

pytestmark = [pytest.mark.redis, pytest.mark.slow]

JOBS = 200_000
BATCH = 10_000
SWARM_SIZE = 100
#: Bytes all non-ledger keys of the queue may hold after any batch: a batch's worth of keys is
#: expired before the next, so this does not depend on JOBS.
BOUND = 1_000_000
#: ``older_than`` that makes every job finished so far expired (a result_ttl shorter than a batch).
ALL_FINISHED = -1.0
LEDGER_KEYS = ("ledger", "ledger:ids")


def _non_ledger_bytes(client: Any, prefix: str) -> int:
    total = 0
    for key in client.scan_iter(match=f"{{{prefix}}}:*", count=1000):
        if key.decode().split(":", 1)[1] not in LEDGER_KEYS:
            total += client.memory_usage(key, samples=0) or 0
    return total


async def test_memory_outside_the_ledger_stays_bounded_over_200000_jobs() -> None:
    import redis  # noqa: PLC0415 - redis-py is optional

    from swarmd.queue.redis.backend import RedisBackend  # noqa: PLC0415

    url = require_redis()
    prefix = f"swarmd-test-{os.urandom(5).hex()}"
    backend = RedisBackend(url, prefix=prefix)
    sync = redis.Redis.from_url(url)
    await backend.open()
    sizes: list[int] = []
    try:
        for start in range(0, JOBS, BATCH):
            await backend.submit(
                [
                    new_job(
                        agent="echo", gid="gid-1", payload={"n": i}, idempotency_key=f"key-{i}",
                        swarm_id=f"swarm-{i // SWARM_SIZE}",
                    )
                    for i in range(start, start + BATCH)
                ]
            )  # fmt: skip
            finished = 0
            while finished < BATCH:
                reserved = await backend.reserve(BATCH, lease=60.0)
                now = time.time()
                await backend.finish(
                    [
                        Finish(
                            r.job_id, Disposition.DONE, handle=r.handle,
                            record=OutcomeRecord(
                                job_id=r.job_id, gid=r.gid, agent=r.agent, outcome="succeeded",
                                attempt=r.attempt, finished_at=now, swarm_id=r.job.swarm_id if r.job else None,
                            ).encode(),
                        )
                        for r in reserved
                    ]
                )  # fmt: skip
                finished += len(reserved)
            forgotten = 0
            while (step := await backend.expire_finished(ALL_FINISHED, 5000)) > 0:
                forgotten += step
            assert forgotten == BATCH + BATCH // SWARM_SIZE  # every key and every swarm set
            sizes.append(_non_ledger_bytes(sync, prefix))
        assert int(sync.llen(f"{{{prefix}}}:ledger")) == JOBS
        assert max(sizes) < BOUND, sizes
    finally:
        await backend.close()
        keys = list(sync.scan_iter(match=f"{{{prefix}}}:*", count=1000))
        if keys:
            sync.unlink(*keys)
        sync.close()
