"""What retention costs per job, against what the hot path costs: the bound on `swarmd bench
soak`'s throughput ratio, measured in process on one quiet SQLite backend.

``jobs`` echo jobs with idempotency keys go through the hot path in the daemon's sizes (submits
of `SUBMIT_BATCH`, reserves and finishes of `GROUP`), each call timed; then retention does
what it must do for each of them, timed the same way: the expiry forgets every key, and the
archive moves every entry to segments (reading the entries, writing the segments, the forget
steps, the vacuum steps that give the pages back, the WAL checkpoint after them). Nothing
overlaps, and every call waits for the backend's one thread, as the daemon's do.

``serial_bound`` = hot / (hot + retention): the throughput ratio, retention on against off, of
a daemon whose backend thread is its bottleneck, once retention keeps up with it (every job's
key expired and entry archived). The paired rounds can do somewhat better than the bound where
work overlaps on a second core (the reads and the checkpoint run on a connection of their own,
gzip lets go of the GIL), and worse where the hot path waits for a step.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, Final, TypeVar

import msgspec

from swarmd.model import UpkeepStep, new_job, new_job_ids
from swarmd.queue.archiving import Selection, archive_ledger
from swarmd.queue.sqlite.backend import SqliteBackend
from swarmd.runtime.retention import expire_results
from swarmd.testing.finishes import succeeded

T = TypeVar("T")

#: Jobs per submit (the soak's producer submits this many at once).
SUBMIT_BATCH: Final = 5000
#: Jobs per reserve and per finish: about the daemon's group commit under the soak's load.
GROUP: Final = 250


def bench_retention_cost(jobs: int = 50_000) -> dict[str, Any]:
    """Microseconds per job on the backend, the hot path's calls and retention's, and the bound."""
    return asyncio.run(_measure(jobs))


async def _measure(jobs: int) -> dict[str, Any]:
    hot: dict[str, float] = defaultdict(float)
    holds: dict[str, float] = defaultdict(float)
    with tempfile.TemporaryDirectory(prefix="swarmd-bench-retention-cost-") as parent:
        state = Path(parent) / "state"
        state.mkdir(mode=0o700)
        backend = SqliteBackend(state)
        backend.checkpoint_aside = True  # as the daemon's
        backend.on_upkeep_step = lambda step, seconds: holds.__setitem__(step, holds[step] + seconds)
        await backend.open()
        try:
            template = new_job(agent="echo", gid="GID-bench", payload=None)
            for start in range(0, jobs, SUBMIT_BATCH):
                ids = new_job_ids(min(SUBMIT_BATCH, jobs - start))
                batch = [
                    msgspec.structs.replace(template, id=job_id, idempotency_key=f"cost-{start + n}")
                    for n, job_id in enumerate(ids)
                ]
                await _timed(hot, "submit", backend.submit(batch))
                for _ in range(0, len(batch), GROUP):
                    held = await _timed(hot, "reserve", backend.reserve(GROUP, lease=300.0))
                    finishes = succeeded(held, finished_at=time.time())
                    await _timed(hot, "finish", backend.finish(finishes))
            retention: dict[str, float] = defaultdict(float)
            expired = await _timed(retention, "expire", expire_results(backend, 0.0))
            run = await _timed(retention, "archive", archive_ledger(backend, Selection(keep=0), state / "archive"))
        finally:
            await backend.close()
    if expired != jobs or run.entries != jobs:
        raise RuntimeError(f"retention cost: expired {expired} keys and archived {run.entries} of {jobs} jobs")
    forget, vacuum = holds[UpkeepStep.FORGET.value], holds[UpkeepStep.VACUUM.value]
    checkpoint = holds[UpkeepStep.WAL_CHECKPOINT.value]  # on the second connection, awaited
    parts = {
        "expire": retention["expire"],
        # the archive's own time, less its steps': reading the entries and writing the segments
        "read_and_write": retention["archive"] - forget - vacuum - checkpoint,
        "forget": forget,
        "vacuum": vacuum,
        "checkpoint": checkpoint,
    }
    hot_total, retention_total = sum(hot.values()), retention["expire"] + retention["archive"]
    return {
        "jobs": jobs,
        "hot_path_us_per_job": {name: seconds / jobs * 1e6 for name, seconds in hot.items()},
        "retention_us_per_job": {name: seconds / jobs * 1e6 for name, seconds in parts.items()},
        "hot_us": hot_total / jobs * 1e6,
        "retention_us": retention_total / jobs * 1e6,
        "serial_bound": hot_total / (hot_total + retention_total),
    }


async def _timed(into: dict[str, float], name: str, call: Awaitable[T]) -> T:
    started = time.perf_counter()
    try:
        return await call
    finally:
        into[name] += time.perf_counter() - started
