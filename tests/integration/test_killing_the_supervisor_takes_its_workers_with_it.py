"""The supervisor of ``--workers 2`` killed with ``kill -9`` leaves no worker behind (each
armed PR_SET_PDEATHSIG and watches its control socket), and the next start finds its jobs:
the leases the workers held come back and every job is recorded once.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.harness import Daemon, assert_exactly_once, ledger, ledger_count, submit, wait_until
from support.supervised import alive, worker_pids

pytestmark = pytest.mark.slow


def test_no_orphan_workers_and_no_lost_job(tmp_path: Path) -> None:
    state, barrier = tmp_path / "state", tmp_path / "barrier"
    daemon = Daemon(state, "--agents", "support.agents", "--workers", "2", "--max-concurrent", "1")
    try:
        daemon.start()
        pids = worker_pids(daemon)
        assert len(pids) == 2 and all(alive(pid) for pid in pids.values())
        # Both workers hold a job that waits for a third party: neither can finish yet.
        jobs = submit(state, "file_barrier", "GID-k", payload={"path": str(barrier), "parties": 3}, count=2)
        wait_until(lambda: barrier.exists() and len(barrier.read_text().splitlines()) == 2, what="both running")
        daemon.kill9()
        wait_until(lambda: not any(alive(pid) for pid in pids.values()), timeout=10, what="the workers to die")

        daemon.start()
        wait_until(lambda: ledger_count(state) == 2, timeout=30, what="both jobs to run again and finish")
        assert daemon.stop() == 0
    finally:
        daemon.ensure_dead()
    assert_exactly_once(ledger(state), jobs)
