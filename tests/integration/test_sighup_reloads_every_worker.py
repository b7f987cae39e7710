"""SIGHUP to the supervisor of ``--workers 2`` reloads both workers: the new concurrency limit
is in force on each, and a worker restarted later starts with it too."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from support.harness import Daemon, wait_until
from support.supervised import by_worker, events, worker_pids

pytestmark = pytest.mark.slow


def test_sighup_reaches_every_worker_and_outlives_a_restart(tmp_path: Path) -> None:
    state, config = tmp_path / "state", tmp_path / "swarmd.toml"
    config.write_text("max_concurrent = 4\n")
    daemon = Daemon(state, "--config", str(config), "--workers", "2")
    try:
        daemon.start()
        assert by_worker(daemon, "swarmd_concurrency_limit") == {"0": 4.0, "1": 4.0}
        config.write_text("max_concurrent = 7\n")
        daemon.signal(signal.SIGHUP)
        wait_until(
            lambda: by_worker(daemon, "swarmd_concurrency_limit") == {"0": 7.0, "1": 7.0},
            what="both workers to apply the new limit",
        )
        assert len(events(daemon, "reloaded")) == 2

        os.kill(worker_pids(daemon)[0], signal.SIGKILL)
        wait_until(lambda: len(events(daemon, "worker_started")) == 3, timeout=30, what="worker 0 restarted")
        daemon.wait_ready()
        wait_until(
            lambda: by_worker(daemon, "swarmd_concurrency_limit") == {"0": 7.0, "1": 7.0},
            what="the restarted worker to start with the reloaded limit",
        )
        assert daemon.stop() == 0
    finally:
        daemon.ensure_dead()
