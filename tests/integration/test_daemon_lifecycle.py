"""`swarmd serve` as a real subprocess over a real SQLite file, from start to stop.

Jobs submitted before and during a run are each recorded once; kill -9 loses and duplicates
nothing; SIGTERM drains within its grace period; sd_notify READY/WATCHDOG/STOPPING reach a real
socket; SIGHUP reloads the concurrency limit; a row the daemon cannot decode is dead-lettered.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import sqlite3
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

pytestmark = pytest.mark.slow


def test_submit_serve_every_job_in_the_ledger_with_its_gid_and_outcome(tmp_path: Path) -> None:
    state = tmp_path / "state"
    # Jobs submitted before any daemon runs are found when it starts.
    early = submit(state, "echo", "GID-early", payload={"n": 1}, count=3)
    with running(state) as daemon:
        wait_until(lambda: ledger_count(state) == 3, what="the early jobs")
        late = submit(state, "sleep", "GID-late", payload={"seconds": 0}, count=5)
        failing = submit(state, "fail", "GID-fail", "--max-attempts", "1", payload={"permanent": True})
        wait_until(lambda: ledger_count(state) == 9, what="all jobs")
        assert daemon.stop() == 0
    entries = ledger(state)
    assert_exactly_once(entries, early + late + failing)
    by_id = {entry["job_id"]: entry for entry in entries}
    assert all(by_id[j]["gid"] == "GID-early" and by_id[j]["outcome"] == "succeeded" for j in early)
    assert all(by_id[j]["result"] == {"n": 1} for j in early)
    assert all(by_id[j]["gid"] == "GID-late" and by_id[j]["outcome"] == "succeeded" for j in late)
    assert by_id[failing[0]]["outcome"] == "dead_lettered"
    verify = swarmd("ledger", "verify", "--state-dir", str(state))
    assert verify.stdout.startswith("ledger ok: 9 entries")


def test_kill_9_with_a_thousand_jobs_in_flight_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ids = submit(state, "sleep", "GID-k", payload={"seconds": 2}, count=1200)
    daemon = Daemon(state, "--max-concurrent", "2000").start()
    try:
        wait_until(lambda: daemon.metrics().get("swarmd_agents_in_flight", 0) >= 1000, what="1000 jobs in flight")
        daemon.kill9()
        assert queue_states(state).get("leased", 0) >= 1000  # the dead daemon's leases are still held
        daemon.start()  # the restart returns them to the queue at once
        wait_until(lambda: ledger_count(state) == 1200, timeout=60, what="all 1200 jobs after the restart")
        assert daemon.stop() == 0
    finally:
        daemon.ensure_dead()
    entries = ledger(state)
    assert_exactly_once(entries, ids)
    assert {entry["outcome"] for entry in entries} == {"succeeded"}
    assert queue_states(state) == {}  # nothing left leased (or anywhere)
    assert swarmd("ledger", "verify", "--state-dir", str(state)).returncode == 0


def test_sigterm_drains_within_grace_and_unfinished_jobs_run_after_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    quick = submit(state, "sleep", "GID-q", payload={"seconds": 0.2}, count=20)
    # An hour: they cannot end by themselves before the test cancels them, however loaded the machine.
    slow = submit(state, "sleep", "GID-s", payload={"seconds": 3600}, count=30)
    daemon = Daemon(state, "--max-concurrent", "100", "--grace-seconds", "1").start()
    try:
        wait_until(lambda: ledger_count(state) == 20, what="the quick jobs")
        wait_until(lambda: daemon.metrics().get("swarmd_agents_in_flight", 0) == 30, what="slow jobs running")
        started = time.monotonic()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=20) == 0
        assert time.monotonic() - started < 1 + 10  # the grace period, plus start-up slack of a loaded machine
        assert ledger_count(state) == 20  # the slow ones were returned, not recorded
        assert queue_states(state) == {"ready": 30}
        # Their attempt was refunded: they start again as attempt 1.
        daemon.args = ["--max-concurrent", "100"]
        daemon.start()
        swarmd("cancel", "--state-dir", str(state), slow[0])  # cancel works on a running job too
        wait_until(lambda: daemon.metrics().get("swarmd_agents_in_flight", 0) == 29, what="29 running")
        swarmd("cancel", "--state-dir", str(state), "--gid", "GID-s", "--yes")  # the other 29, in one call
        wait_until(lambda: ledger_count(state) == 50, what="every job recorded")
        assert daemon.stop() == 0
    finally:
        daemon.ensure_dead()
    entries = ledger(state)
    assert_exactly_once(entries, quick + slow)
    outcomes = {entry["job_id"]: (entry["outcome"], entry["attempt"]) for entry in entries}
    assert all(outcomes[j] == ("succeeded", 1) for j in quick)
    assert all(outcomes[j] == ("cancelled", 1) for j in slow)


def test_sd_notify_ready_watchdog_and_stopping_on_a_real_socket(tmp_path: Path) -> None:
    state = tmp_path / "state"
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(20)
    messages: list[str] = []

    def receive_until(word: str) -> None:
        while not any(word in m.split("\n") for m in messages):
            messages.append(sock.recv(4096).decode())

    env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "200000"}
    try:
        with running(state, env=env) as daemon:
            receive_until("READY=1")
            receive_until("WATCHDOG=1")
            daemon.signal(signal.SIGTERM)
            receive_until("STOPPING=1")
            assert daemon.wait() == 0
    finally:
        sock.close()
    flat = [line for message in messages for line in message.split("\n")]
    assert flat.index("READY=1") < flat.index("WATCHDOG=1") < flat.index("STOPPING=1")


def test_an_undecodable_job_is_dead_lettered_and_the_daemon_runs_on(tmp_path: Path) -> None:
    state = tmp_path / "state"
    good = submit(state, "echo", "GID-ok", payload="before")
    with contextlib.closing(sqlite3.connect(state / "swarmd.db")) as conn, conn:
        conn.execute(
            "INSERT INTO jobs (id, agent, gid, state, body) VALUES ('corrupt-1', 'echo', 'GID-x', 'ready', ?)",
            (b'{"id": "corrupt-1", "gid": 7}',),
        )
    with running(state) as daemon:
        wait_until(lambda: ledger_count(state) == 2, what="both jobs to be recorded")
        after = submit(state, "echo", "GID-ok", payload="after")
        wait_until(lambda: ledger_count(state) == 3, what="a job after the bad one")
        dead = msgspec.json.decode(swarmd("dlq", "list", "--state-dir", str(state), "--json").stdout)
        assert daemon.metrics()['swarmd_rejected_jobs_total{reason="malformed"}'] == 1
    assert [d["job_id"] for d in dead] == ["corrupt-1"]
    reason = msgspec.json.encode(dead[0]["error"]).decode()  # an object, not JSON text in a string
    assert "gid" in reason and "malformed" in reason
    outcomes = {e["job_id"]: e["outcome"] for e in ledger(state)}
    assert outcomes == {good[0]: "succeeded", "corrupt-1": "dead_lettered", after[0]: "succeeded"}


def test_sighup_reloads_the_concurrency_limit(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = tmp_path / "swarmd.toml"
    config.write_text("max_concurrent = 7\n")
    with running(state, "--config", str(config)) as daemon:
        assert daemon.metrics()["swarmd_concurrency_limit"] == 7
        config.write_text("max_concurrent = 3\nlog_level = 'debug'\n")
        daemon.signal(signal.SIGHUP)
        wait_until(lambda: daemon.metrics()["swarmd_concurrency_limit"] == 3, what="the new limit")
        assert '"event":"reloaded"' in daemon.log()
