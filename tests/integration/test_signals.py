"""Signals to a real daemon under load: SIGTERM twice, SIGHUP, SIGSTOP/SIGCONT.

- A second SIGTERM cuts the drain short: the daemon exits long before its grace period with
  jobs still running, and those jobs are back in the queue (attempt refunded), not lost.
- SIGHUP during load applies the new concurrency limit at once and loses nothing, however
  often it comes.
- SIGSTOP freezes the whole process: the watchdog pings stop (systemd would act on that), and
  after SIGCONT they resume and every job still ends exactly once.
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
    running,
    submit,
    swarmd,
    wait_until,
)
from support.notify import notify_socket

pytestmark = pytest.mark.slow


def test_a_second_sigterm_cuts_the_drain_short_and_returns_the_jobs(tmp_path: Path) -> None:
    state = tmp_path / "state"
    out = swarmd(
        "submit", "--state-dir", str(state), "--agent", "sleep", "--gid", "GID-t", "--payload", '{"seconds": 600}',
        "--count", "10", "--swarm", "--json",
    )  # fmt: skip
    submitted = msgspec.json.decode(out.stdout)
    ids, swarm_id = submitted["job_ids"], submitted["swarm_id"]
    daemon = Daemon(state, "--grace-seconds", "60")
    try:
        daemon.start()
        wait_until(lambda: daemon.metrics()["swarmd_agents_in_flight"] == 10, what="10 jobs running")
        daemon.signal(signal.SIGTERM)
        wait_until(lambda: daemon.get("/readyz") == (503, "draining\n"), what="the drain to begin")
        assert daemon.proc is not None and daemon.proc.poll() is None  # draining: grace is 60 s
        hurried = time.monotonic()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=15) == 0
        assert time.monotonic() - hurried < 10  # not the 60 s grace period
        assert '"action":"hurry"' in daemon.log() and '"event":"drain_grace_over"' in daemon.log()
        # The running jobs were given back, unspent, and nothing was recorded for them.
        assert queue_states(state) == {"ready": 10}
        assert ledger_count(state) == 0
        daemon.args = []
        daemon.start()
        wait_until(lambda: daemon.metrics()["swarmd_agents_in_flight"] == 10, what="the jobs running again")
        swarmd("cancel", "--state-dir", str(state), "--swarm", swarm_id)
        wait_until(lambda: ledger_count(state) == 10, what="the cancelled jobs")
        assert daemon.stop() == 0
    finally:
        daemon.ensure_dead()
    entries = ledger(state)
    assert_exactly_once(entries, ids)
    assert {(entry["outcome"], entry["attempt"]) for entry in entries} == {("cancelled", 1)}


def test_sighup_under_load_applies_the_new_limit_and_loses_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = tmp_path / "swarmd.toml"
    config.write_text("max_concurrent = 40\n")
    ids = submit(state, "sleep", "GID-h", payload={"seconds": 0.2}, count=600)
    with running(state, "--config", str(config)) as daemon:
        wait_until(lambda: daemon.metrics()["swarmd_agents_in_flight"] == 40, what="40 jobs running")
        # A burst of reloads with changing limits, then the one under test.
        for limit in (30, 50, 10, 60, 20):
            config.write_text(f"max_concurrent = {limit}\n")
            daemon.signal(signal.SIGHUP)
        wait_until(lambda: daemon.metrics()["swarmd_concurrency_limit"] == 20, what="the reloads")
        config.write_text("max_concurrent = 4\n")
        daemon.signal(signal.SIGHUP)
        wait_until(lambda: daemon.metrics()["swarmd_concurrency_limit"] == 4, what="the new limit")
        # Jobs started under the old limit end (0.2 s); from then on at most 4 run at once.
        wait_until(lambda: daemon.metrics()["swarmd_agents_in_flight"] <= 4, what="the old jobs to end")
        seen = []
        for _ in range(20):
            seen.append(daemon.metrics()["swarmd_agents_in_flight"])
            time.sleep(0.02)  # sampling the gauge over ~0.5 s, not waiting for a condition
        assert max(seen) <= 4 and 4 in seen, seen
        config.write_text("max_concurrent = 200\n")
        daemon.signal(signal.SIGHUP)
        wait_until(lambda: ledger_count(state) == 600, timeout=60, what="every job")
        assert daemon.log().count('"event":"reloaded"') >= 3  # signals sent in a burst may merge
        assert daemon.stop() == 0
    entries = ledger(state)
    assert_exactly_once(entries, ids)
    assert {entry["outcome"] for entry in entries} == {"succeeded"}
    assert queue_states(state) == {}


def test_sigstop_stops_the_watchdog_pings_and_sigcont_resumes_them(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ids = submit(state, "sleep", "GID-s", payload={"seconds": 0.1}, count=300)
    with notify_socket() as systemd:
        env = {"NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": "400000"}  # a ping every 0.2 s
        daemon = Daemon(state, "--max-concurrent", "20", env=env)
        try:
            daemon.start()
            wait_until(lambda: len(systemd.pings()) >= 3, what="watchdog pings")
            wait_until(lambda: ledger_count(state) >= 20, what="jobs under way")
            daemon.signal(signal.SIGSTOP)
            stopped = time.monotonic()
            done_when_stopped = ledger_count(state)
            wait_until(lambda: time.monotonic() - stopped > 2.0, what="two seconds stopped")
            assert ledger_count(state) == done_when_stopped  # frozen: nothing moves
            daemon.signal(signal.SIGCONT)
            resumed = time.monotonic()
            wait_until(lambda: systemd.pings()[-1] > resumed, what="pings after SIGCONT")
            wait_until(lambda: ledger_count(state) == 300, timeout=30, what="every job")
            assert daemon.get("/healthz")[0] == 200
            assert daemon.stop() == 0
        finally:
            daemon.ensure_dead()
        pings = systemd.pings()
    # 0.1 s of slack for a datagram sent just before the stop and received just after.
    assert not [at for at in pings if stopped + 0.1 < at < resumed], "a ping while stopped"
    assert [at for at in pings if at < stopped] and [at for at in pings if at > resumed]
    entries = ledger(state)
    assert_exactly_once(entries, ids)
    assert {entry["outcome"] for entry in entries} == {"succeeded"}
    assert queue_states(state) == {}
