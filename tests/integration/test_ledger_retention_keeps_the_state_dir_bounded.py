"""200,000 jobs through a real SQLite state with a retention of 20,000 live ledger entries.

Driven in process through the backend API (submit, reserve and finish in batches of 5,000, then
the daemon's own archiving round, `LedgerUpkeep.archive_round`), so that it takes seconds, not
the minutes a daemon running echo jobs one by one would. After every 20,000 jobs the state
dir's size is measured: past the first rounds it stays within a stated bound, instead of
growing by ~560 bytes a job. The index of archived job ids (a 64-bit hash and a generation
a job) holds the ids archived within ``archived_id_ttl``: each round, before archiving, the
retention's expiry runs as if the horizon had passed since the previous round (an injected
``now``), so the index holds one round's ids at most (ARCHIVED_ID_BYTES each) and the state
does not grow with the job count at all. At the end the archive and the live store verify as
one chain, every job id is in exactly one of them, once, and only the last round's archived
ids are still refused.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
from support.ledger_fill import finish_jobs

from swarmd.config import Settings
from swarmd.ledger.archive import archived_entries, segments, verify_with_archive
from swarmd.queue.sqlite.backend import SqliteBackend
from swarmd.runtime.ledger_upkeep import LedgerUpkeep
from swarmd.runtime.retention import expire_archived_ids
from swarmd.storage.sqlite import Durability

#: ~20 s of CPU (the queue's own submit, reserve and finish of 200,000 jobs); 35-75 s of wall
#: time measured on the shared 2-core VM, more than the default timeout allows under load.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

JOBS = 200_000
ROUND = 20_000
RETAIN = 20_000
#: The state (swarmd.db, its WAL and shm) with 20,000 live entries and an empty queue: 8.8 MB
#: measured after the second round (entries ~400 bytes with their job id index), 14.8 MB after
#: the first (a WAL not yet truncated). Without a horizon it grew ~15 bytes a job archived
#: after that (11.1 MB after 200,000 jobs); with one it stays flat.
LIVE_BOUND = 16 * 1024 * 1024
#: What one archived job id costs in the state: its 8-byte hash and 3-byte generation in
#: archived_ids' b-tree (~18 bytes measured), with room to spare.
ARCHIVED_ID_BYTES = 24
#: The horizon: the shortest the default settings allow (lease 30 s + timeout 300 s).
HORIZON = "330s"
#: How far past a round the expiry is told it is: the horizon, its grain (an hour) and an hour.
AFTER_THE_HORIZON = 330.0 + 2 * 3600.0
#: How much the state may still grow from the second round to the last (free pages, WAL).
SLACK = 1024 * 1024


def _state_bytes(state: Path) -> int:
    return sum(path.stat().st_size for path in state.iterdir() if path.is_file())


async def test_two_hundred_thousand_jobs_with_a_retention_of_twenty_thousand_entries(tmp_path: Path) -> None:
    state, archive = tmp_path / "state", tmp_path / "archive"
    state.mkdir(mode=0o700)
    backend = SqliteBackend(state, durability=Durability.NORMAL, inline=True)
    await backend.open()
    upkeep = LedgerUpkeep(backend, Settings(ledger_max_entries=RETAIN, archived_id_ttl=HORIZON), archive)
    ids: list[str] = []
    sizes: list[int] = []
    forgotten = 0
    try:
        while len(ids) < JOBS:
            ids += await finish_jobs(backend, ROUND, batch=5000)
            # The retention's pass, a horizon after the previous round's archive.
            forgotten += await expire_archived_ids(backend, now=time.time() + AFTER_THE_HORIZON)
            while (await upkeep.archive_round()).entries:  # the daemon's rounds, until caught up
                pass
            sizes.append(_state_bytes(state))
            anchor = await backend.ledger_anchor()
            live = await backend.ledger_entries()
            assert len(live) <= RETAIN and (anchor is None or live[0].index == anchor.index + 1)
        archived = len(ids) - RETAIN
        print(f"state dir bytes after each {ROUND} jobs: {sizes}")
        bound = LIVE_BOUND + ARCHIVED_ID_BYTES * ROUND  # the live entries and one round of ids
        for round_number, size in enumerate(sizes, start=1):
            assert size <= bound, f"after {round_number * ROUND} jobs the state is {size} bytes, over {bound}: {sizes}"
        # Without archiving, the state would have grown by ~560 bytes a job; without a horizon,
        # by ~15. It does not grow with the job count: the last round is within SLACK of the second.
        assert sizes[-1] - sizes[1] <= SLACK, sizes
        assert forgotten == archived - ROUND  # every archived id but the last round's, forgotten
        assert anchor is not None and anchor.index == archived - 1
        assert verify_with_archive(archive, anchor, live).ok
        assert (await backend.verify()).ok
        seen = Counter(entry.job_id for entry in archived_entries(archive, anchor.index))
        seen.update(entry.job_id for entry in live)
        assert seen == Counter(ids) and set(seen.values()) == {1}
        assert segments(archive)[-1].last == anchor.index
        last_round = ids[archived - ROUND : archived]
        assert await backend.archived_ids([ids[0], *last_round, ids[archived]]) == set(last_round)
    finally:
        await backend.close()
