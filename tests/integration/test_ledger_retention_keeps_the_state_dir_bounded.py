"""200,000 jobs through a real SQLite state with a retention of 20,000 live ledger entries.

Driven in process through the backend API (submit, reserve and finish in batches of 5,000, then
the daemon's own archiving round, `LedgerUpkeep.archive_round`), so that it takes seconds, not
the minutes a daemon running echo jobs one by one would. After every 20,000 jobs the state
dir's size is measured: past the first rounds it stays within a stated bound, instead of
growing by ~560 bytes a job. What does grow is the compact index of archived job ids (8 bytes
of hash a job plus b-tree overhead): the bound allows ARCHIVED_ID_BYTES a job for it, and the
test checks that this is all the growth there is. At the end the archive and the live store
verify as one chain, and every job id is in exactly one of them, once.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from support.ledger_fill import finish_jobs

from swarmd.config import Settings
from swarmd.ledger.archive import archived_entries, segments, verify_with_archive
from swarmd.queue.sqlite.backend import SqliteBackend
from swarmd.runtime.ledger_upkeep import LedgerUpkeep
from swarmd.storage.sqlite import Durability

#: ~20 s of CPU (the queue's own submit, reserve and finish of 200,000 jobs); 35-75 s of wall
#: time measured on the shared 2-core VM, more than the default timeout allows under load.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

JOBS = 200_000
ROUND = 20_000
RETAIN = 20_000
#: The state (swarmd.db, its WAL and shm) with 20,000 live entries and an empty queue: 8.8 MB
#: measured after the second round (entries ~400 bytes with their job id index), 14.8 MB after
#: the first (a WAL not yet truncated), growing ~15 bytes a job archived after that.
LIVE_BOUND = 16 * 1024 * 1024
#: What one archived job id costs in the state: its 8-byte hash key in archived_jobs' b-tree.
ARCHIVED_ID_BYTES = 24


def _state_bytes(state: Path) -> int:
    return sum(path.stat().st_size for path in state.iterdir() if path.is_file())


async def test_two_hundred_thousand_jobs_with_a_retention_of_twenty_thousand_entries(tmp_path: Path) -> None:
    state, archive = tmp_path / "state", tmp_path / "archive"
    state.mkdir(mode=0o700)
    backend = SqliteBackend(state, durability=Durability.NORMAL, inline=True)
    await backend.open()
    upkeep = LedgerUpkeep(backend, Settings(ledger_max_entries=RETAIN), archive)
    ids: list[str] = []
    sizes: list[int] = []
    try:
        while len(ids) < JOBS:
            ids += await finish_jobs(backend, ROUND, batch=5000)
            while (await upkeep.archive_round()).entries:  # the daemon's rounds, until caught up
                pass
            sizes.append(_state_bytes(state))
            anchor = await backend.ledger_anchor()
            live = await backend.ledger_entries()
            assert len(live) <= RETAIN and (anchor is None or live[0].index == anchor.index + 1)
        archived = len(ids) - RETAIN
        print(f"state dir bytes after each {ROUND} jobs: {sizes}")
        for round_number, size in enumerate(sizes, start=1):
            bound = LIVE_BOUND + ARCHIVED_ID_BYTES * max(0, round_number * ROUND - RETAIN)
            assert size <= bound, f"after {round_number * ROUND} jobs the state is {size} bytes, over {bound}: {sizes}"
        # Without archiving, the state would have grown by ~560 bytes a job; it grew by far less.
        assert (sizes[-1] - sizes[1]) / (JOBS - 2 * ROUND) <= ARCHIVED_ID_BYTES, sizes
        assert anchor is not None and anchor.index == archived - 1
        assert verify_with_archive(archive, anchor, live).ok
        assert (await backend.verify()).ok
        seen = Counter(entry.job_id for entry in archived_entries(archive, anchor.index))
        seen.update(entry.job_id for entry in live)
        assert seen == Counter(ids) and set(seen.values()) == {1}
        assert segments(archive)[-1].last == anchor.index
        assert await backend.archived_ids([ids[0], ids[archived - 1], ids[archived]]) == {ids[0], ids[archived - 1]}
    finally:
        await backend.close()
