"""With ``--workers 2`` only worker 0 serves the API socket that a client's waits go through;
two clients, each waiting for the job of one worker with their own backstop look an hour away,
both get their result. (Worker 1's commits reach worker 0's waiters through the supervisor at
once; without that they would still be found by the daemon's look at each push request, within
a second: this test shows that waits work across workers, not how fast.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support.harness import base_env, ledger_count, running, submit, wait_until

pytestmark = pytest.mark.slow


def test_a_wait_is_woken_by_the_commit_of_either_worker(tmp_path: Path) -> None:
    state, barrier, release = tmp_path / "state", tmp_path / "barrier", tmp_path / "release"
    args = ("--agents", "support.agents", "--workers", "2", "--max-concurrent", "1")
    with running(state, *args, env={"SWARMD_RESERVE_AHEAD": "0"}) as daemon:
        # One job on each worker (one slot each, none reserved ahead), held until `release`.
        payload = {"path": str(barrier), "parties": 2, "release": str(release)}
        jobs = submit(state, "file_barrier", "GID-w", payload=payload, count=2)
        wait_until(lambda: barrier.exists() and len(barrier.read_text().splitlines()) == 2, what="both running")
        env = base_env({"SWARMD_WAIT_BACKSTOP": "3600"})
        waiters = [
            subprocess.Popen(
                [sys.executable, "-m", "swarmd", "wait", "--state-dir", str(state), "--timeout", "30", job],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                text=True,
            )
            for job in jobs
        ]
        try:
            release.touch()
            wait_until(lambda: ledger_count(state) == 2, what="both jobs recorded")
            outcomes = [waiter.communicate(timeout=60) for waiter in waiters]
        finally:
            for waiter in waiters:
                if waiter.poll() is None:
                    waiter.kill()
                    waiter.wait()
        # 124 (timed out) if the news of worker 1's commit never reached its waiter.
        assert [waiter.returncode for waiter in waiters] == [0, 0], outcomes
        assert daemon.stop() == 0
