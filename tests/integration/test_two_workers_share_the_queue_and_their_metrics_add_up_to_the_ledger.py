"""`swarmd serve --workers 2`: two worker processes run jobs side by side from one SQLite
queue, the ledger stays one gap-free chain with every job once, and the supervisor's /metrics
shows each worker's series under its own ``worker`` label, which add up to the ledger.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.harness import assert_exactly_once, ledger, ledger_count, running, submit, swarmd, wait_until
from support.supervised import by_worker

pytestmark = pytest.mark.slow

#: One job at a time per worker, none reserved ahead: two jobs running at once are on two workers.
ONE_EACH = {"SWARMD_RESERVE_AHEAD": "0"}


def test_two_workers_run_jobs_side_by_side_and_their_metrics_sum_to_the_ledger(tmp_path: Path) -> None:
    state = tmp_path / "state"
    barrier = tmp_path / "barrier"
    args = ("--agents", "support.agents", "--workers", "2", "--max-concurrent", "1")
    with running(state, *args, env=ONE_EACH) as daemon:
        # Two jobs that finish only once both run: with one slot per worker, one on each worker.
        together = submit(state, "file_barrier", "GID-b", payload={"path": str(barrier), "parties": 2}, count=2)
        echoes = submit(state, "echo", "GID-e", payload={"n": 1}, count=60)
        wait_until(lambda: ledger_count(state) == 62, timeout=30, what="every job recorded")

        def succeeded() -> float:
            return sum(by_worker(daemon, "swarmd_jobs_total", outcome="succeeded").values())

        wait_until(lambda: succeeded() == 62, what="the workers' counters to catch up with their commits")
        assert by_worker(daemon, "swarmd_jobs_total", agent="file_barrier", outcome="succeeded") == {
            "0": 1.0,
            "1": 1.0,
        }
        # Histograms and callback gauges come through whole, per worker; none is summed here.
        durations = by_worker(daemon, "swarmd_agent_duration_seconds_count")
        assert set(durations) == {"0", "1"} and sum(durations.values()) == 62
        assert set(by_worker(daemon, "swarmd_agents_in_flight")) == {"0", "1"}
        assert set(by_worker(daemon, "process_cpu_seconds_total")) == {"0", "1"}
        assert by_worker(daemon, "swarmd_ready") == {"0": 1.0, "1": 1.0}
        assert by_worker(daemon, "swarmd_workers_running") == {"": 2.0}
        assert by_worker(daemon, "swarmd_worker_restarts_total") == {"0": 0.0, "1": 0.0}
        assert daemon.stop() == 0
    assert_exactly_once(ledger(state), together + echoes)
    assert swarmd("ledger", "verify", "--state-dir", str(state), check=False).returncode == 0
