"""A job that crashes the daemon each time it runs ends as a poison dead letter.

When an exception escapes the daemon's runtime, it records which jobs were running
(``crashes.json`` in the state dir) and gives them back to the queue with their attempt
unspent before it exits 1. A job named in ``poison_after`` (2) records is dead-lettered
("poison: ...") instead of run again; suspects run one at a time, so an innocent job that
ran beside it once is not blamed, runs, and keeps its attempt. A kill -9 records nothing.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import msgspec
import pytest
from support.harness import Daemon, ledger, submit, wait_until

pytestmark = pytest.mark.slow


def _starts(marker: Path) -> list[str]:
    return marker.read_text().splitlines() if marker.exists() else []


def _attempts(state: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(f"file:{state / 'swarmd.db'}?mode=ro", uri=True, timeout=5)) as conn:
        return {str(job_id): int(n) for job_id, n in conn.execute("SELECT id, attempt FROM jobs")}


def _crash_records(state: Path) -> list[list[str]]:
    path = state / "crashes.json"
    if not path.exists():
        return []
    return [record["jobs"] for record in msgspec.json.decode(path.read_bytes())["crashes"]]


def test_a_job_that_keeps_crashing_the_daemon_is_dead_lettered_as_poison(tmp_path: Path) -> None:
    state = tmp_path / "state"
    innocent_marker, poison_marker = tmp_path / "innocent", tmp_path / "poison"
    daemon = Daemon(state, "--agents", "support.agents")
    try:
        # -- crash 1: the poison job runs beside an innocent one ---------------------------
        daemon.start()
        innocent = submit(state, "record_start", "GID-i", payload={"marker": str(innocent_marker), "seconds": 5})
        wait_until(lambda: _starts(innocent_marker), what="the innocent job to start")
        poison = submit(state, "crash_daemon", "GID-p", "--max-attempts", "5", payload={"marker": str(poison_marker)})
        assert daemon.wait(timeout=20) == 1
        assert [sorted(jobs) for jobs in _crash_records(state)] == [sorted(innocent + poison)]
        # Both given back, their attempt unspent.
        assert _attempts(state) == {innocent[0]: 0, poison[0]: 0}

        # -- crash 2: suspects run one at a time; the innocent one runs and is cleared ------
        daemon.start(wait_ready=False)
        assert daemon.wait(timeout=30) == 1
        assert _starts(innocent_marker) == ["start attempt 1", "start attempt 1"]
        assert _starts(poison_marker) == ["start attempt 1", "start attempt 1"]
        assert [sorted(jobs) for jobs in _crash_records(state)] == [poison, poison]

        # -- third start: the poison job is dead-lettered instead of run ---------------------
        daemon.start()
        wait_until(lambda: len(ledger(state)) == 2, timeout=20, what="the poison job's dead letter")
        assert daemon.stop() == 0
    finally:
        daemon.ensure_dead()
    by_id = {entry["job_id"]: entry for entry in ledger(state)}
    assert by_id[innocent[0]]["outcome"] == "succeeded"
    assert by_id[innocent[0]]["attempt"] == 1  # the crashes cost it nothing
    error = by_id[poison[0]]["error"]
    assert by_id[poison[0]]["outcome"] == "dead_lettered"
    assert error["type"] == "poison"
    assert error["message"] == "poison: running when the daemon crashed 2 times"
    assert len(_starts(poison_marker)) == 2  # never run a third time
    assert _crash_records(state) == []  # a dead letter leaves the records


def test_a_kill_9_leaves_no_crash_record(tmp_path: Path) -> None:
    state = tmp_path / "state"
    marker = tmp_path / "starts"
    daemon = Daemon(state, "--agents", "support.agents")
    try:
        daemon.start()
        job = submit(state, "record_start", "GID-k", payload={"marker": str(marker), "seconds": 1})
        wait_until(lambda: _starts(marker), what="the job to start")
        daemon.kill9()
        daemon.start()
        wait_until(lambda: len(ledger(state)) == 1, timeout=20, what="the job to run again")
        assert daemon.stop() == 0
    finally:
        daemon.ensure_dead()
    assert not (state / "crashes.json").exists()
    assert ledger(state)[0]["job_id"] == job[0] and ledger(state)[0]["outcome"] == "succeeded"
