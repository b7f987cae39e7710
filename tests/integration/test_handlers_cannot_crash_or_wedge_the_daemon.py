"""Whatever a handler does, a real daemon stays up, records a clear outcome, and stops in time.

- An exception whose ``__str__`` raises (and a result that cannot be printed) is an outcome,
  dead-lettered with its type name; the daemon keeps serving.
- A handler that swallows its cancellation is abandoned ABANDON_AFTER after its cancel: its
  attempt ends as the cancel says (a timeout dead-lettered; a drain gives the job back), its
  slot is free, ``swarmd_abandoned_tasks`` counts it, a log line names the job, and SIGTERM
  still stops the daemon within its grace period plus a small bound (a second one at once).
- A handler that swallows its cancel and returns is recorded as its cancel says, not
  ``succeeded``: the ledger and the log agree.
- Tasks a handler leaves behind raising SystemExit or KeyboardInterrupt are logged and counted
  (``swarmd_stray_task_errors_total``); one that ignores its cancellation does not keep the
  daemon from exiting.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import msgspec
import pytest
from support.harness import (
    Daemon,
    assert_exactly_once,
    ledger,
    ledger_count,
    queue_states,
    submit,
    swarmd,
    wait_until,
)

pytestmark = pytest.mark.slow

#: How long after its grace period a stopping daemon may take, whatever its handlers do: the
#: abandon bound (1 s), the leftover-task bound (1 s), the commit, and a loaded machine's slack.
STOP_BOUND = 8.0


def _log_events(daemon: Daemon, event: str) -> list[dict[str, object]]:
    lines = [line for line in daemon.log().splitlines() if line.startswith("{")]
    return [entry for entry in map(msgspec.json.decode, lines) if entry.get("event") == event]


def _alive(daemon: Daemon) -> bool:
    return daemon.proc is not None and daemon.proc.poll() is None


def test_an_exception_that_cannot_be_formatted_is_dead_lettered_and_the_daemon_keeps_serving(tmp_path: Path) -> None:
    state = tmp_path / "state"
    daemon = Daemon(state, "--agents", "support.agents")
    try:
        daemon.start()
        evil = submit(state, "evil", "GID-e", "--max-attempts", "1", count=3)
        unprintable = submit(state, "evil_result", "GID-e", count=2)
        echo = submit(state, "echo", "GID-o", payload={"n": 1}, count=20)
        wait_until(lambda: ledger_count(state) == 25, timeout=20, what="every job's outcome")
        assert _alive(daemon)
        assert daemon.stop() == 0
    finally:
        daemon.ensure_dead()
    entries = ledger(state)
    assert_exactly_once(entries, evil + unprintable + echo)
    by_id = {entry["job_id"]: entry for entry in entries}
    for job_id in evil:
        assert by_id[job_id]["outcome"] == "dead_lettered"
        assert by_id[job_id]["error"]["type"] == "Evil"
        assert by_id[job_id]["error"]["message"] == "<Evil: str() failed>"
    for job_id in unprintable:
        assert by_id[job_id]["outcome"] == "dead_lettered"
        assert "not JSON data" in by_id[job_id]["error"]["message"]
    assert all(by_id[job_id]["outcome"] == "succeeded" for job_id in echo)
    log = daemon.log()
    assert "internal_error" not in log and "unhandled errors in a TaskGroup" not in log
    # Tracebacks appear only as the recorded failures of the handlers, never as the daemon's own.
    traced = [line for line in log.splitlines() if "Traceback" in line]
    assert traced and all('"event":"job_dead_lettered"' in line or '"event":"job_retry"' in line for line in traced)


def test_a_handler_that_swallows_its_timeout_is_abandoned_and_its_attempt_times_out(tmp_path: Path) -> None:
    state = tmp_path / "state"
    # Five timeouts in a row would open the agent's circuit breaker and defer the sixth job.
    env = {"SWARMD_BREAKER_FAILURES": "100"}
    daemon = Daemon(state, "--agents", "support.agents", "--max-concurrent", "4", "--grace-seconds", "2", env=env)
    try:
        daemon.start()
        stuck = submit(state, "swallow_cancel", "GID-s", "--timeout", "1", "--max-attempts", "1", count=4)
        returning = submit(
            state, "swallow_cancel", "GID-r", "--timeout", "1", "--max-attempts", "1", payload={"then_return": True}
        )
        wait_until(lambda: ledger_count(state) == 5, timeout=20, what="the swallowed timeouts to end")
        # A cancel request it swallows too: the job ends cancelled all the same.
        asked = submit(state, "swallow_cancel", "GID-c")
        wait_until(lambda: daemon.metrics()["swarmd_agents_in_flight"] == 5, what="the job to cancel to run")
        swarmd("cancel", "--state-dir", str(state), asked[0])
        wait_until(lambda: ledger_count(state) == 6, timeout=20, what="the swallowed cancel request to end")
        # Their four slots are free again although their tasks still run: other jobs go through.
        echo = submit(state, "echo", "GID-o", payload={"n": 1}, count=20)
        wait_until(lambda: ledger_count(state) == 26, timeout=20, what="the jobs after them")
        samples = daemon.metrics()
        assert samples["swarmd_abandoned_tasks"] == 5
        stopping = time.monotonic()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=2 + STOP_BOUND) == 0  # the abandoned tasks do not hold it
        assert time.monotonic() - stopping < 2 + STOP_BOUND
    finally:
        daemon.ensure_dead()
    entries = ledger(state)
    assert_exactly_once(entries, stuck + returning + asked + echo)
    by_id = {entry["job_id"]: entry for entry in entries}
    for job_id in stuck:
        assert by_id[job_id]["outcome"] == "dead_lettered"
        assert by_id[job_id]["error"]["type"] == "Timeout"
        assert "abandoned" in by_id[job_id]["error"]["message"]
    # It returned after swallowing its timeout: a timeout still, not a success.
    assert by_id[returning[0]]["outcome"] == "dead_lettered"
    assert by_id[returning[0]]["error"]["type"] == "Timeout"
    assert by_id[asked[0]]["outcome"] == "cancelled"
    abandoned = {str(line["job_id"]): line["reason"] for line in _log_events(daemon, "job_abandoned")}
    assert abandoned == {**dict.fromkeys(stuck, "timeout"), asked[0]: "cancelled"}
    assert _log_events(daemon, "tasks_left_running")


def test_sigterm_stops_a_daemon_whose_handlers_swallow_the_drain_and_gives_their_jobs_back(tmp_path: Path) -> None:
    state = tmp_path / "state"
    daemon = Daemon(state, "--agents", "support.agents", "--grace-seconds", "2")
    try:
        daemon.start()
        stuck = submit(state, "swallow_cancel", "GID-s", count=3)
        returning = submit(state, "swallow_cancel", "GID-r", payload={"then_return": True}, count=2)
        wait_until(lambda: daemon.metrics()["swarmd_agents_in_flight"] == 5, what="the handlers to run")
        stopping = time.monotonic()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=2 + STOP_BOUND) == 0
        assert time.monotonic() - stopping < 2 + STOP_BOUND
    finally:
        daemon.ensure_dead()
    # The ledger and the log agree: no outcome recorded, every job back in the queue, unspent.
    assert ledger_count(state) == 0
    assert queue_states(state) == {"ready": 5}
    assert sorted(str(line["job_id"]) for line in _log_events(daemon, "job_abandoned")) == sorted(stuck)
    assert len(_log_events(daemon, "job_released")) == len(returning)


def test_a_second_sigterm_stops_a_drain_of_swallowing_handlers_at_once(tmp_path: Path) -> None:
    state = tmp_path / "state"
    daemon = Daemon(state, "--agents", "support.agents", "--grace-seconds", "60")
    try:
        daemon.start()
        submit(state, "swallow_cancel", "GID-s", count=3)
        wait_until(lambda: daemon.metrics()["swarmd_agents_in_flight"] == 3, what="the handlers to run")
        daemon.signal(signal.SIGTERM)
        wait_until(lambda: daemon.get("/readyz") == (503, "draining\n"), what="the drain to begin")
        hurried = time.monotonic()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=STOP_BOUND) == 0
        assert time.monotonic() - hurried < STOP_BOUND  # not the 60 s grace period
    finally:
        daemon.ensure_dead()
    assert queue_states(state) == {"ready": 3}
    assert ledger_count(state) == 0


def test_tasks_a_handler_leaves_behind_cannot_end_or_wedge_the_daemon(tmp_path: Path) -> None:
    state = tmp_path / "state"
    daemon = Daemon(state, "--agents", "support.agents", "--grace-seconds", "2")
    try:
        daemon.start()
        leavers = [
            *submit(state, "leave_task", "GID-l", payload={"kind": "systemexit"}),
            *submit(state, "leave_task", "GID-l", payload={"kind": "keyboardinterrupt"}),
            *submit(state, "leave_task", "GID-l", payload={"kind": "ignore_cancel"}),
        ]
        wait_until(lambda: ledger_count(state) == 3, timeout=20, what="the leaving handlers' outcomes")
        wait_until(
            lambda: daemon.metrics().get("swarmd_stray_task_errors_total", 0) >= 2,
            timeout=10,
            what="the leftover tasks' SystemExit and KeyboardInterrupt to be counted",
        )
        echo = submit(state, "echo", "GID-o", payload={"n": 1}, count=20)
        wait_until(lambda: ledger_count(state) == 23, timeout=20, what="jobs after the leftovers raised")
        assert _alive(daemon)
        stopping = time.monotonic()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=2 + STOP_BOUND) == 0  # the task ignoring its cancel is left
        assert time.monotonic() - stopping < 2 + STOP_BOUND
    finally:
        daemon.ensure_dead()
    entries = ledger(state)
    assert_exactly_once(entries, leavers + echo)
    assert all(entry["outcome"] == "succeeded" for entry in entries)
    errors = [str(line["error"]) for line in _log_events(daemon, "stray_task_error")]
    assert any(error.startswith("SystemExit") for error in errors), errors
    assert any(error.startswith("KeyboardInterrupt") for error in errors), errors
    assert _log_events(daemon, "stopped") and _log_events(daemon, "tasks_left_running")
