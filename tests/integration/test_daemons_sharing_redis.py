"""Issue 7 at the daemon level: several real `swarmd serve --backend redis` on one Redis.

Each test runs in a key prefix of its own (deleted afterwards) on the shared Redis at
127.0.0.1:6379, which runs with ``appendonly no`` and so needs ``--allow-volatile-redis``, or on
a redis-server of its own (a unix socket in tmp_path, killed by its pid) when it must stop
Redis or choose its persistence. What is checked is what an operator sees: the CLI (`ledger
export/verify`, `jobs`, `status`, `dlq`), `/readyz` and `/metrics`. Every wait is for a
condition with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest
from support.harness import assert_exactly_once, wait_until
from support.redis_deployment import (
    Deployment,
    assert_clean,
    fresh_prefix,
    readiness,
    shared_redis,
    start_all,
    wait_readiness,
)
from support.services import require_tool

pytestmark = [pytest.mark.slow, pytest.mark.redis]


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[Deployment]:
    """The shared Redis, under a fresh key prefix whose keys are deleted afterwards."""
    with shared_redis(tmp_path) as deployment:
        yield deployment


@contextlib.contextmanager
def private_redis(tmp_path: Path, *options: str) -> Iterator[tuple[Deployment, subprocess.Popen[bytes]]]:
    """A redis-server of our own on a unix socket in tmp_path (no TCP port), killed by its pid."""
    pytest.importorskip("redis")
    server = require_tool("redis-server")  # fails instead of skipping with SWARMD_TEST_STRICT=1
    sock = tmp_path / "redis.sock"
    where = ["--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700", "--dir", str(tmp_path)]
    proc = subprocess.Popen(
        [server, *where, "--save", "", *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deployment = Deployment(f"unix://{sock}", fresh_prefix(), tmp_path)
    try:
        wait_until(lambda: sock.exists() or proc.poll() is not None, timeout=10, what="redis-server to start")
        assert proc.poll() is None, f"redis-server exited {proc.returncode}"
        yield deployment, proc
    finally:
        deployment.kill_all()
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.wait(timeout=10)


def stays(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    """``predicate`` holds throughout ``seconds`` (a check that something does NOT happen)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), what
        time.sleep(0.1)


# -- several daemons, one queue ----------------------------------------------------------------
def test_three_daemons_one_killed_mid_run_every_job_recorded_exactly_once(shared: Deployment) -> None:
    env = {"SWARMD_LEASE_SECONDS": "2"}
    daemons = [shared.daemon("--allow-volatile-redis", "--max-concurrent", "32", env=env) for _ in range(3)]
    start_all(daemons)
    victim, survivors = daemons[0], daemons[1:]
    ids: list[str] = []
    for seconds in (0.05, 0.1, 0.15, 0.2):
        ids += shared.submit("sleep", "GID-many", payload={"seconds": seconds}, count=750)
    wait_until(lambda: victim.metrics().get("swarmd_agents_in_flight", 0) > 0, what="the victim running jobs")
    victim.kill9()
    assert shared.ledger_len() < 3000, "the run ended before the kill"
    shared.wait_ledger(3000)
    entries = assert_clean(shared, ids)
    assert {entry["outcome"] for entry in entries} == {"succeeded"}
    # the victim's jobs in flight were taken over by the survivors once their lease expired
    assert any(entry["attempt"] >= 2 for entry in entries)
    for daemon in survivors:
        assert readiness(daemon)[0] == 200
        assert daemon.stop() == 0


def test_a_job_longer_than_its_lease_on_a_live_daemon_runs_once(shared: Deployment, tmp_path: Path) -> None:
    env = {"SWARMD_LEASE_SECONDS": "1"}
    daemons = [shared.daemon("--allow-volatile-redis", "--agents", "support.agents", env=env) for _ in range(2)]
    start_all(daemons)
    marker = tmp_path / "starts.txt"
    [job_id] = shared.submit("record_start", "GID-long", payload={"marker": str(marker), "seconds": 4})
    shared.wait_ledger(1, timeout=30)
    assert marker.read_text().splitlines() == ["start attempt 1"]
    [entry] = assert_clean(shared, [job_id])
    assert (entry["outcome"], entry["attempt"]) == ("succeeded", 1)
    for daemon in daemons:
        assert daemon.stop() == 0


# -- Redis away, and Redis that would lose work ---------------------------------------------
def test_redis_stopped_for_ten_seconds_readiness_follows_and_nothing_is_lost(tmp_path: Path) -> None:
    with private_redis(tmp_path, "--appendonly", "yes") as (dep, proc):
        daemons = [dep.daemon("--max-concurrent", "16", env={"SWARMD_LEASE_SECONDS": "2"}) for _ in range(2)]
        start_all(daemons)  # AOF is on: ready without --allow-volatile-redis
        ids = dep.submit("sleep", "GID-pause", payload={"seconds": 0.1}, count=800)
        dep.wait_ledger(100)
        wait_until(lambda: all(d.metrics().get("swarmd_agents_in_flight", 0) > 0 for d in daemons), what="load")
        os.kill(proc.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            for daemon in daemons:
                wait_readiness(daemon, 503, timeout=10)
                assert time.monotonic() - stopped <= 5.0, f"503 only after {time.monotonic() - stopped:.1f}s"
            _, reason = readiness(daemons[0])
            assert "unavailable" in reason or "unreachable" in reason, reason
            wait_until(lambda: time.monotonic() - stopped >= 10, timeout=15, what="10 s of stopped Redis", step=0.2)
            assert all(readiness(d)[0] == 503 for d in daemons)
            # not ready, yet alive: a hung Redis call is not a stalled event loop (no watchdog kill)
            assert all(d.get("/healthz")[0] == 200 for d in daemons)
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        for daemon in daemons:
            wait_readiness(daemon, 200, timeout=30)
        dep.wait_ledger(800)
        entries = assert_clean(dep, ids)
        assert {entry["outcome"] for entry in entries} == {"succeeded"}
        for daemon in daemons:
            assert daemon.stop() == 0


def test_a_redis_without_aof_is_refused_unless_allowed(tmp_path: Path) -> None:
    with private_redis(tmp_path, "--appendonly", "no") as (dep, _):
        [job_id] = dep.submit("echo", "GID-aof", payload={"n": 1})
        refusing = dep.daemon().start(wait_ready=False)
        wait_until(
            lambda: (r := readiness(refusing))[0] == 503 and "appendonly" in r[1], what="/readyz 503 naming appendonly"
        )
        reason = readiness(refusing)[1]
        assert "appendonly no" in reason and "--allow-volatile-redis" in reason, reason
        # it takes no work, and stays alive (on /healthz, so for the watchdog) past the stall limit
        stays(
            lambda: dep.cli_json("status", job_id)["state"] == "ready" and refusing.get("/healthz")[0] == 200,
            3.0,
            "the refusing daemon took the job, or /healthz failed",
        )
        assert refusing.metrics().get("swarmd_agents_in_flight") == 0
        # A producer is told that no daemon will serve this queue (the job is kept).
        warned = dep.cli("submit", "--agent", "echo", "--gid", "GID-aof")
        assert "no daemon is serving" in warned.stderr, warned.stderr
        assert refusing.stop() == 0

        dep.daemon("--allow-volatile-redis").start()
        dep.wait_ledger(2, timeout=15)
        entry = next(e for e in assert_clean(dep, [job_id, warned.stdout.strip()]) if e["job_id"] == job_id)
        assert (entry["outcome"], entry["result"]) == ("succeeded", {"n": 1})


# -- the operator's CLI ------------------------------------------------------------------------
def test_the_cli_works_against_redis(shared: Deployment) -> None:
    shared.daemon("--allow-volatile-redis", "--agents", "support.agents").start()

    [ok] = shared.submit("echo", "GID-cli", payload={"n": 1})
    wait_until(lambda: shared.cli_json("status", ok).get("outcome") == "succeeded", what="echo done")

    [failing] = shared.submit("fail", "GID-cli", "--max-attempts", "1", payload={"permanent": True})
    wait_until(lambda: [j["job_id"] for j in shared.cli_json("dlq", "list")] == [failing], what="dead letter")
    [pair] = shared.cli_json("dlq", "requeue", failing)
    assert pair["dead_job_id"] == failing
    again = pair["job_id"]
    wait_until(lambda: [j["job_id"] for j in shared.cli_json("dlq", "list")] == [again], what="requeued, dead again")

    [running] = shared.submit("slow", "GID-cli", payload={"seconds": 3600})
    wait_until(lambda: [j["job_id"] for j in shared.cli_json("jobs", "--state", "leased")] == [running], what="lease")
    assert shared.cli_json("cancel", running) == {"cancelled": [running]}
    wait_until(lambda: shared.cli_json("status", running).get("outcome") == "cancelled", what="cancelled")

    tail = [msgspec.json.decode(line) for line in shared.cli("ledger", "tail", "-n", "1", "--json").stdout.splitlines()]
    assert [row["job_id"] for row in tail] == [running]
    entries = shared.ledger()
    assert_exactly_once(entries, [ok, failing, again, running])
    assert {e["job_id"]: e["outcome"] for e in entries} == {
        ok: "succeeded",
        failing: "dead_lettered",
        again: "dead_lettered",
        running: "cancelled",
    }
    assert shared.cli("ledger", "verify").stdout.startswith("ledger ok: 4 entries")
    assert [(j["job_id"], j["state"]) for j in shared.cli_json("jobs")] == [(again, "dead")]
