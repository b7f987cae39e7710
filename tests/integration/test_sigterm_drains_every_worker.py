"""SIGTERM to the supervisor of ``--workers 2`` drains both workers within the one grace
period: the jobs running on each finish and are recorded, the queued ones stay queued. A worker
killed with ``kill -9`` in the middle of the drain is not restarted, and the job it held runs
again at the next start: every job ends in the ledger exactly once.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from support.harness import (
    Daemon,
    assert_exactly_once,
    ledger,
    ledger_count,
    queue_states,
    submit,
    wait_until,
)
from support.notify import notify_socket
from support.supervised import alive, events, worker_pids

pytestmark = pytest.mark.slow

ONE_EACH = {"SWARMD_RESERVE_AHEAD": "0"}
ARGS = ("--agents", "support.agents", "--workers", "2", "--max-concurrent", "1", "--grace-seconds", "60")


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _one_running_on_each_worker(tmp_path: Path, state: Path) -> tuple[list[str], list[str], Path]:
    """Two jobs running, one per worker, that end once the file ``release`` exists; five more queued."""
    barrier, release = tmp_path / "barrier", tmp_path / "release"
    payload = {"path": str(barrier), "parties": 2, "release": str(release)}
    running_ids = submit(state, "file_barrier", "GID-d", payload=payload, count=2)
    wait_until(lambda: _lines(barrier) == 2, timeout=30, what="both jobs running, one per worker")
    queued = submit(state, "echo", "GID-q", payload={"n": 1}, count=5)
    return running_ids, queued, release


def test_sigterm_drains_both_workers(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with notify_socket() as notify:
        daemon = Daemon(state, *ARGS, env={**ONE_EACH, "NOTIFY_SOCKET": str(notify.path)})
        try:
            daemon.start()
            running_ids, queued, release = _one_running_on_each_worker(tmp_path, state)
            pids = worker_pids(daemon)
            daemon.signal(signal.SIGTERM)
            wait_until(lambda: daemon.get("/readyz") == (503, "draining\n"), what="the drain to begin")
            wait_until(lambda: len(events(daemon, "signal")) == 3, what="both workers to be told")  # + its own
            assert "STOPPING=1" in [line for _, line in notify.lines]
            release.touch()  # the running jobs may finish now, well inside the grace period
            assert daemon.wait(timeout=30) == 0
        finally:
            daemon.ensure_dead()
    assert not any(alive(pid) for pid in pids.values())
    assert len(events(daemon, "stopped")) == 3  # each worker, then the supervisor
    assert {e["job_id"]: e["outcome"] for e in ledger(state)} == dict.fromkeys(running_ids, "succeeded")
    assert queue_states(state) == {"ready": len(queued)}


def test_a_worker_killed_mid_drain_loses_no_job(tmp_path: Path) -> None:
    state = tmp_path / "state"
    daemon = Daemon(state, *ARGS, env=ONE_EACH)
    try:
        daemon.start()
        running_ids, queued, release = _one_running_on_each_worker(tmp_path, state)
        pids = worker_pids(daemon)
        daemon.signal(signal.SIGTERM)
        wait_until(lambda: len(events(daemon, "signal")) == 3, what="both workers to be told")
        os.kill(pids[1], signal.SIGKILL)
        wait_until(lambda: len(events(daemon, "worker_exited")) == 1, what="the supervisor to see worker 1 gone")
        assert events(daemon, "worker_exited")[0]["exit"] == "killed by SIGKILL"
        release.touch()
        assert daemon.wait(timeout=30) == 0
        assert len(events(daemon, "worker_started")) == 2  # not restarted while draining
        assert ledger_count(state) == 1  # worker 0's job; worker 1's is still leased

        daemon.start()  # the next start returns the dead worker's lease; its job runs again
        wait_until(lambda: ledger_count(state) == 7, timeout=30, what="every job recorded")
        assert daemon.stop() == 0
    finally:
        daemon.ensure_dead()
    assert_exactly_once(ledger(state), running_ids + queued)
