"""A wait that times out has waited at least its timeout by the clock a caller reads.

uvloop's own clock counts whole milliseconds, so a deadline kept on it can pass up to a
millisecond before ``timeout`` real seconds have (a fresh-clone CI run saw a 0.2 s wait return
after 0.19991 s). The wait keeps its deadline on `time.monotonic` instead.
"""

from __future__ import annotations

import asyncio
import time

from swarmd.ledger.chain import StoredEntry
from swarmd.queue.waiting import wait_for_entries

WAITS = 40
TIMEOUT = 0.011  # not a whole number of milliseconds from wherever the loop's clock stands


async def _nothing_finished(job_ids: list[str]) -> list[StoredEntry]:
    return []


async def _woken_early(seconds: float) -> set[str]:
    """A notification source that wakes the waiter at once for other jobs (as a push for a
    commit of someone else's does): the wait looks at the clock again on every turn."""
    await asyncio.sleep(0)
    return {"another-job"}


async def test_every_timed_out_wait_lasts_at_least_its_timeout() -> None:
    short: list[float] = []
    for _ in range(WAITS):
        started = time.monotonic()
        found = await wait_for_entries(_nothing_finished, ["a-job"], TIMEOUT, 30.0, _woken_early)
        took = time.monotonic() - started
        assert found == {}
        if took < TIMEOUT:
            short.append(took)
    assert short == [], f"{len(short)} of {WAITS} waits of {TIMEOUT} s ended early: {short}"
