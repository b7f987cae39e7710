"""Fill a backend's ledger fast, in process: submit, reserve and finish jobs in big batches.

For tests that need many ledger entries (archiving, retention) without a daemon running echo
jobs one by one: each batch is one submit, one reserve and one finish, as the worker would
commit them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import msgspec

from swarmd.model import new_job, new_job_ids
from swarmd.queue.base import QueueBackend
from swarmd.testing.finishes import succeeded

#: A lease long enough that it never expires during a test.
LEASE = 300.0


async def finish_jobs(
    backend: QueueBackend,
    count: int,
    *,
    batch: int = 2000,
    finished_at: float | None = None,
    job_ids: Sequence[str] | None = None,
) -> list[str]:
    """Submit ``count`` echo jobs and finish them all as succeeded; return their ids in
    submit order. ``finished_at`` stamps their records (default: now); ``job_ids`` names them
    (default: fresh ids, one millisecond a batch)."""
    ids: list[str] = []
    for start in range(0, count, batch):
        # One job validated, the others copies of it under fresh ids (validating each costs more
        # than the queue's own work).
        template = new_job(agent="echo", gid="GID-fill", payload={"n": start})
        size = min(batch, count - start)
        named = new_job_ids(size) if job_ids is None else job_ids[start : start + size]
        jobs = [msgspec.structs.replace(template, id=job_id) for job_id in named]
        ids.extend(await backend.submit(jobs))
        reserved = await backend.reserve(len(jobs), lease=LEASE)
        at = time.time() if finished_at is None else finished_at
        await backend.finish(succeeded(reserved, finished_at=at, result={"n": 1}))
    return ids
