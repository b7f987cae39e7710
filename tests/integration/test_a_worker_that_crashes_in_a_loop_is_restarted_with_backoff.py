"""A worker that dies is restarted by its supervisor after a backoff that doubles with each
death in a row (0.5 s, 1 s, 2 s, ...), counted in ``swarmd_worker_restarts_total{worker}`` and
logged (``worker_died``), never restarted hot; the other worker keeps serving meanwhile. With
poison detection on, the job that crashes workers ends as a poison dead letter and the
restarts stop.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.harness import Daemon, ledger, ledger_count, submit, wait_until
from support.supervised import by_worker, events

pytestmark = pytest.mark.slow

ARGS = ("--agents", "support.agents", "--workers", "2")


def _restarts(daemon: Daemon) -> float:
    return sum(by_worker(daemon, "swarmd_worker_restarts_total").values())


def test_a_crash_loop_backs_off_and_is_reported(tmp_path: Path) -> None:
    state = tmp_path / "state"
    daemon = Daemon(state, *ARGS, env={"SWARMD_POISON_AFTER": "0"})  # never poison: crash forever
    try:
        daemon.start()
        submit(state, "crash_daemon", "GID-c", "--max-attempts", "5", payload={"marker": str(tmp_path / "m")})
        # Four deaths over two slots: at least one slot died twice in a row.
        wait_until(lambda: _restarts(daemon) >= 4, timeout=60, what="four worker deaths")
        deaths = events(daemon, "worker_died")
        assert len(deaths) >= 4
        for worker in (0, 1):
            mine = [d for d in deaths if d["worker"] == worker]
            assert [d["deaths_in_a_row"] for d in mine] == list(range(1, len(mine) + 1))
            assert [d["restart_in_s"] for d in mine] == [0.5 * 2**k for k in range(len(mine))]
            assert all(d["exit"] == "exit 1" for d in mine)
        assert max(len([d for d in deaths if d["worker"] == w]) for w in (0, 1)) >= 2
        assert daemon.stop() == 0  # a stop during a backoff ends it at once
    finally:
        daemon.ensure_dead()


def test_the_poison_job_ends_the_crash_loop(tmp_path: Path) -> None:
    state = tmp_path / "state"
    daemon = Daemon(state, *ARGS)  # poison_after = 2
    try:
        daemon.start()
        poison = submit(state, "crash_daemon", "GID-p", "--max-attempts", "5", payload={"marker": str(tmp_path / "m")})
        wait_until(lambda: ledger_count(state) == 1, timeout=60, what="the poison job's dead letter")
        # The dead letter needs two deaths, but the supervisor may count the second only after
        # the worker that wrote the dead letter saw it: wait for the count, then for both back.
        wait_until(lambda: _restarts(daemon) >= 2, timeout=30, what="the two deaths that made it poison")
        wait_until(lambda: daemon.get("/readyz")[0] == 200, timeout=30, what="both workers back")
        # A worker that started before a crash knows only the records of its start, so each of
        # the two may run the job once more than a lone daemon would: 2 or 3 deaths, no more.
        assert 2 <= _restarts(daemon) <= 3
        echo = submit(state, "echo", "GID-e", payload={"n": 1})
        wait_until(lambda: ledger_count(state) == 2, what="the restarted workers to serve")
        assert daemon.stop() == 0
    finally:
        daemon.ensure_dead()
    entries = {e["job_id"]: e for e in ledger(state)}
    assert entries[poison[0]]["outcome"] == "dead_lettered"
    assert entries[poison[0]]["error"]["type"] == "poison"
    assert entries[echo[0]]["outcome"] == "succeeded"
