"""`swarmd serve --workers 2 --backend redis`: the two workers share the Redis queue as two
daemons would; their metrics add up to the ledger; a worker killed with ``kill -9`` is
restarted by the supervisor, and the job it held comes back when its lease expires, as a dead
daemon's does: every job ends in the one gap-free ledger exactly once.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.harness import wait_until
from support.redis_deployment import Deployment, assert_clean, shared_redis
from support.supervised import alive, by_worker, events, worker_pids

pytestmark = [pytest.mark.slow, pytest.mark.redis]


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[Deployment]:
    """The shared Redis, under a fresh key prefix whose keys are deleted afterwards."""
    with shared_redis(tmp_path) as deployment:
        yield deployment


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_two_workers_on_redis_lose_nothing_when_one_is_killed(shared: Deployment, tmp_path: Path) -> None:
    barrier = tmp_path / "barrier"
    daemon = shared.daemon(
        "--agents", "support.agents", "--workers", "2", "--max-concurrent", "1", "--allow-volatile-redis",
        env={"SWARMD_RESERVE_AHEAD": "0", "SWARMD_LEASE_SECONDS": "1"},
    )  # fmt: skip
    daemon.start()
    # Two jobs running, one per worker, that wait for a third arrival: the rerun of the one
    # whose worker is killed.
    held = shared.submit("file_barrier", "GID-r", payload={"path": str(barrier), "parties": 3}, count=2)
    wait_until(lambda: _lines(barrier) == 2, timeout=30, what="one job running on each worker")
    echoes = shared.submit("echo", "GID-e", payload={"n": 1}, count=40)
    pids = worker_pids(daemon)
    os.kill(pids[1], signal.SIGKILL)
    wait_until(lambda: len(events(daemon, "worker_died")) == 1, what="the supervisor to see worker 1 die")
    assert events(daemon, "worker_died")[0]["exit"] == "killed by SIGKILL"
    shared.wait_ledger(42)
    wait_until(lambda: worker_pids(daemon)[1] != pids[1] and alive(worker_pids(daemon)[1]), what="worker 1 back")
    assert by_worker(daemon, "swarmd_worker_restarts_total") == {"0": 0.0, "1": 1.0}
    assert daemon.stop() == 0
    assert_clean(shared, held + echoes)


def test_two_workers_on_redis_count_what_the_ledger_records(shared: Deployment, tmp_path: Path) -> None:
    barrier = tmp_path / "barrier"
    daemon = shared.daemon(
        "--agents", "support.agents", "--workers", "2", "--max-concurrent", "1", "--allow-volatile-redis",
        env={"SWARMD_RESERVE_AHEAD": "0"},
    )  # fmt: skip
    daemon.start()
    together = shared.submit("file_barrier", "GID-b", payload={"path": str(barrier), "parties": 2}, count=2)
    echoes = shared.submit("echo", "GID-e", payload={"n": 1}, count=40)
    shared.wait_ledger(42)

    def succeeded() -> dict[str, float]:
        return by_worker(daemon, "swarmd_jobs_total", outcome="succeeded")

    wait_until(lambda: sum(succeeded().values()) == 42, what="the counters to catch up with the ledger")
    assert set(succeeded()) == {"0", "1"}
    assert by_worker(daemon, "swarmd_jobs_total", agent="file_barrier", outcome="succeeded") == {"0": 1.0, "1": 1.0}
    assert daemon.stop() == 0
    assert_clean(shared, together + echoes)
