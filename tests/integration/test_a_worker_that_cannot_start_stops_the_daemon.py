"""A worker that dies before it ever got through its start (an agent module that cannot be
imported, say) is not restarted in a loop: the supervisor stops every worker and exits with
the worker's code, and the log says why in one line, as `swarmd serve` does without workers."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.harness import Daemon
from support.supervised import alive, events, worker_pids

pytestmark = pytest.mark.slow


def test_a_bad_agent_module_stops_the_supervisor_with_exit_2(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path / "state", "--agents", "no_such_agent_module", "--workers", "2")
    try:
        daemon.start(wait_ready=False)
        assert daemon.wait(timeout=60) == 2
    finally:
        daemon.ensure_dead()
    log = daemon.log()
    assert "swarmd: error: worker " in log and "cannot import agent module 'no_such_agent_module'" in log
    assert len(events(daemon, "worker_failed_to_start")) == 1
    assert events(daemon, "worker_died") == []  # never restarted
    assert not any(alive(pid) for pid in worker_pids(daemon).values())
