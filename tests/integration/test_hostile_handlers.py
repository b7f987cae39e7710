"""Poison and hostile handlers (tests/support/agents.py) against a real daemon.

A handler that loops forever, one that returns something that is not JSON data, one that
raises a BaseException subclass, and one that blocks the event loop for seconds: each ends in
a ledger entry (dead-lettered, with its reason) and the daemon keeps serving everything else.
While the loop is blocked, /healthz (served from its own thread) answers 503, the loop-lag
histogram records the stall, and the systemd watchdog pings stop for longer than the
WATCHDOG_USEC limit — so that systemd, not a hung daemon, has the last word.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import msgspec
import pytest
from support.harness import Daemon, assert_exactly_once, ledger, ledger_count, submit, swarmd, wait_until
from support.notify import notify_socket

pytestmark = pytest.mark.slow

WATCHDOG_USEC = 1_000_000  # systemd would kill a daemon silent for 1 s; swarmd pings every 0.5 s
BLOCK_SECONDS = 4.0


def unhealthy(daemon: Daemon) -> str | None:
    """/healthz's reason when it answers 503, else None."""
    status, reason = daemon.get("/healthz", timeout=1.0)
    return reason if status == 503 else None


def _by_id(entries: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    return {str(entry["job_id"]): entry for entry in entries}


def test_hostile_handlers_end_in_the_ledger_and_the_daemon_keeps_serving(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with notify_socket() as systemd:
        env = {"NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": str(WATCHDOG_USEC)}
        daemon = Daemon(state, "--agents", "support.agents", "--max-concurrent", "64", env=env)
        try:
            daemon.start()
            # -- poison: each is dead-lettered with its reason, while 500 other jobs go through --
            forever = submit(state, "forever", "GID-h", "--timeout", "5", "--max-attempts", "1", count=5)
            wait_until(lambda: daemon.metrics()["swarmd_agents_in_flight"] == 5, what="the endless handlers")
            unencodable = submit(state, "unencodable", "GID-h", count=5)
            hostile = submit(state, "base_exception", "GID-h", count=5)
            started = time.monotonic()
            echo = submit(state, "echo", "GID-e", payload={"n": 1}, count=500)
            wait_until(lambda: ledger_count(state) == 510, timeout=20, what="the other jobs")
            # Done while the endless handlers still hold their slots: they slowed nobody down.
            assert daemon.metrics()["swarmd_agents_in_flight"] == 5
            assert time.monotonic() - started < 5
            wait_until(lambda: ledger_count(state) == 515, timeout=20, what="the endless handlers' timeouts")

            # -- a handler that blocks the event loop --------------------------------------
            wait_until(lambda: len(systemd.pings()) >= 2, what="watchdog pings before the block")
            lag_before = daemon.metrics()["swarmd_event_loop_lag_seconds_count"]
            blocker = submit(state, "blocker", "GID-b", payload={"seconds": BLOCK_SECONDS})
            reason = wait_until(lambda: unhealthy(daemon), timeout=10, what="/healthz to fail while blocked")
            assert reason is not None
            assert "event loop has not turned" in reason, reason
            blocked_at = time.monotonic()
            assert daemon.get("/metrics", timeout=1.0)[0] == 200  # scrapes are answered meanwhile
            during = submit(state, "echo", "GID-d", payload={"n": 2}, count=500)
            wait_until(lambda: daemon.get("/healthz", timeout=1.0)[0] == 200, timeout=15, what="/healthz to recover")
            wait_until(lambda: ledger_count(state) == 1016, timeout=20, what="the jobs submitted during the block")
            wait_until(lambda: systemd.pings() and systemd.pings()[-1] > blocked_at, what="watchdog pings to resume")
            samples = daemon.metrics()
            assert daemon.stop() == 0
        finally:
            daemon.ensure_dead()
        pings = systemd.pings()

    # The stall is in the loop-lag histogram: one tick more than 2.5 s late.
    assert samples["swarmd_event_loop_lag_seconds_count"] > lag_before
    late = samples["swarmd_event_loop_lag_seconds_count"] - samples['swarmd_event_loop_lag_seconds_bucket{le="2.5"}']
    assert late >= 1, samples
    # Pings stopped for longer than the watchdog limit (systemd would have acted), then resumed.
    gaps = [later - earlier for earlier, later in itertools.pairwise(pings)]
    assert max(gaps) > WATCHDOG_USEC / 1e6 * 2, gaps
    before_block = [at for at in pings if at < blocked_at]
    after_block = [at for at in pings if at > blocked_at]
    assert before_block and after_block
    # Outside the block they came every half limit (the median: a loaded test machine may lag).
    steady = sorted(gap for gap in gaps if gap < BLOCK_SECONDS / 2)
    assert steady and steady[len(steady) // 2] < WATCHDOG_USEC / 1e6, gaps

    entries = ledger(state)
    assert_exactly_once(entries, forever + unencodable + hostile + echo + blocker + during)
    by_id = _by_id(entries)
    for job_id in forever:
        error = by_id[job_id]["error"]
        assert by_id[job_id]["outcome"] == "dead_lettered" and isinstance(error, dict)
        assert error["type"] == "Timeout" and "timed out after 5s" in error["message"]
    for job_id in unencodable:
        error = by_id[job_id]["error"]
        assert by_id[job_id]["outcome"] == "dead_lettered" and isinstance(error, dict)
        assert error["permanent"] and "not JSON data" in error["message"]
        assert by_id[job_id]["attempt"] == 1  # permanent: never retried
    for job_id in hostile:
        error = by_id[job_id]["error"]
        assert by_id[job_id]["outcome"] == "dead_lettered" and isinstance(error, dict)
        assert error["type"] == "Hostile" and error["permanent"]
    assert by_id[blocker[0]]["outcome"] == "succeeded"
    assert all(by_id[job_id]["outcome"] == "succeeded" for job_id in echo + during)
    dead = msgspec.json.decode(swarmd("dlq", "list", "--state-dir", str(state), "--json").stdout)
    assert sorted(d["job_id"] for d in dead) == sorted(forever + unencodable + hostile)
