"""Crash anywhere while archiving: `swarmd ledger archive` killed with SIGKILL at 12 points.

The points are steps of the archive, chosen with a seeded (and printed) random generator:
``segment_temp`` (a segment's temporary file written and fsynced, not yet renamed),
``segment_durable`` (a segment in place, its entries not yet forgotten) and ``forgotten`` (the
1st to 3rd step of forgetting a segment's entries committed, with its anchor, the rest of the
segment still live; the next run finishes that segment first). The real CLI process
dies there by ``kill -9`` (swarmd.ledger.archive.crash_point, through
SWARMD_TEST_ARCHIVE_CRASH), and is run again, as an operator would.

After every kill: the archive and the live store verify as one chain (`swarmd ledger verify
--archive`), and every job id is in exactly one of them, once. At the end the archive finishes
and `swarmd ledger export --archive` lists every job once, indices 0..n-1.
"""

from __future__ import annotations

import random
import signal
import sqlite3
from collections import Counter
from pathlib import Path

import msgspec
import pytest
from support.harness import assert_exactly_once, swarmd
from support.ledger_fill import finish_jobs

from swarmd.ledger.archive import CRASH_ENV, archived_entries, verify_with_archive
from swarmd.queue.archiving import CHUNK
from swarmd.queue.sqlite.backend import DB_NAME, SqliteBackend
from swarmd.storage.sqlite import Durability

pytestmark = pytest.mark.slow

KILLS = 12
JOBS = 5 * CHUNK  # five chunks: room for the kills that each archive one
BEFORE = JOBS - 1000
POINTS = ("segment_temp", "segment_durable", "forgotten")


def _plan(rng: random.Random) -> list[str]:
    """KILLS points as POINT:N; a ``forgotten`` kill archives at most 3 steps of FORGET_STEP (200)
    entries, so the archive (120 steps) is never over before the last kill."""
    return [f"{point}:{rng.randint(1, 3) if point == 'forgotten' else 1}" for point in rng.choices(POINTS, k=KILLS)]


async def _check(state: Path, archive: Path, ids: list[str]) -> None:
    """One chain, every job exactly once across archive and live store."""
    backend = SqliteBackend(state, read_only=True)
    await backend.open()
    try:
        anchor = await backend.ledger_anchor()
        live = await backend.ledger_entries()
    finally:
        await backend.close()
    report = verify_with_archive(archive, anchor, live)
    assert report.ok, report.summary()
    seen = Counter(entry.job_id for entry in live)
    if anchor is not None:
        seen.update(entry.job_id for entry in archived_entries(archive, anchor.index))
    assert seen == Counter(ids), "a job lost or recorded twice"


async def test_kill_9_at_any_step_of_an_archive_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    state, archive = tmp_path / "state", tmp_path / "archive"
    state.mkdir(mode=0o700)
    backend = SqliteBackend(state, durability=Durability.NORMAL)
    await backend.open()
    ids = await finish_jobs(backend, JOBS, batch=CHUNK)
    await backend.close()
    seed = random.randrange(2**32)
    print(f"archive kill points: seed {seed}")
    command = ["ledger", "archive", "--state-dir", str(state), "--before", str(BEFORE), "--to", str(archive)]
    for point in _plan(random.Random(seed)):
        result = swarmd(*command, check=False, env={CRASH_ENV: point})
        assert result.returncode == -signal.SIGKILL, f"not killed at {point}: {result.returncode} {result.stderr}"
        await _check(state, archive, ids)
        verified = swarmd("ledger", "verify", "--state-dir", str(state), "--archive", str(archive), check=False)
        assert verified.returncode == 0, verified.stdout + verified.stderr
    done = swarmd(*command)
    assert "through index" in done.stdout or "nothing to archive" in done.stdout
    await _check(state, archive, ids)
    exported = swarmd("ledger", "export", "--state-dir", str(state), "--archive", str(archive)).stdout
    assert_exactly_once([msgspec.json.decode(line) for line in exported.splitlines()], ids)
    assert not list(archive.glob(".*.tmp"))
    with sqlite3.connect(state / DB_NAME) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT min(idx) FROM ledger").fetchone() == (BEFORE,)
