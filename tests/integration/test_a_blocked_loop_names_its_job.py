"""A handler that blocks the event loop (time.sleep in a coroutine) is named: a log line with
the job, its agent and the stack it is blocked in, and a stall counted for that agent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.harness import Daemon, ledger_count, submit, wait_until

pytestmark = pytest.mark.slow


def _stall_lines(daemon: Daemon) -> list[dict[str, object]]:
    lines = []
    for line in daemon.log().splitlines():
        if '"event_loop_stalled"' in line:
            lines.append(json.loads(line))
    return lines


def test_a_stalled_loop_is_logged_with_the_job_on_it_and_counted(tmp_path: Path) -> None:
    state = tmp_path / "state"
    daemon = Daemon(state, "--agents", "support.agents", env={"SWARMD_LOG_FORMAT": "json"}).start()
    try:
        [job_id] = submit(state, "blocker", "GID-b", payload={"seconds": 3.5})
        wait_until(lambda: _stall_lines(daemon), timeout=30, what="the stall's log line")
        [line] = _stall_lines(daemon)
        assert (line["job_id"], line["agent"], line["gid"]) == (job_id, "blocker", "GID-b")
        assert "time.sleep" in str(line["stack"]) and "in blocker" in str(line["stack"])
        assert float(str(line["stalled_s"])) >= 2.0
        wait_until(lambda: ledger_count(state) == 1, what="the blocking job to finish")
        samples = daemon.metrics()
        assert samples['swarmd_event_loop_stalls_total{agent="blocker"}'] == 1
        assert samples['swarmd_event_loop_stalls_total{agent="echo"}'] == 0
    finally:
        daemon.stop()
