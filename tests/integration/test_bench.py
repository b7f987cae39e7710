"""`swarmd bench` at small sizes: it measures real work, and refuses to report work that did not happen."""

from __future__ import annotations

import contextlib
import io
import os
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import pytest
from support.services import require_redis

from swarmd.bench import e2e, helpers, instrumentation, runner, swarm, throughput
from swarmd.bench import redis as redis_bench
from swarmd.bench.instrumentation import drain
from swarmd.client import Client
from swarmd.ledger.durable import DurableLedger
from swarmd.testing.daemon import LocalDaemon

#: They read the daemon's CPU time: under pytest-xdist, one worker runs them all, one at a time.
pytestmark = pytest.mark.xdist_group("measures_cpu")


def test_spread_reports_median_percentiles_and_extremes() -> None:
    stats = helpers.spread([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (stats["median"], stats["min"], stats["max"], stats["n"]) == (3.0, 1.0, 5.0, 5.0)
    assert stats["p10"] == 1.0 and stats["p90"] == 5.0
    with pytest.raises(helpers.BenchError):
        helpers.spread([])


def test_swarm_scenario_runs_each_size_against_its_floor_with_a_verified_ledger() -> None:
    result = swarm.bench_swarm(agents=(5, 20), repeat=2)
    assert [row["agents"] for row in result["sizes"]] == [5, 20]
    # Per size: 3 warm-up rounds of a dispatch and a commit alone of n entries, then 2 rounds
    # of a dispatch and two commits alone (of n entries and of one); every task and every
    # entry committed alone is one ledger entry.
    assert result["ledger_entries"] == sum(3 * (n + n) + 2 * (n + n + 1) for n in (5, 20))
    for row in result["sizes"]:
        for series in ("swarmd_overhead_s", "floor_overhead_s", "no_ledger_overhead_s", "commit_s", "commit_one_s"):
            assert row[series]["n"] == 2, series
        floor = row["floor_overhead_s"]["median"]
        assert row["ratio"] == pytest.approx(row["swarmd_overhead_s"]["median"] / floor)
        assert row["commit_bound_ratio"] == pytest.approx((floor + row["commit_s"]["median"]) / floor)
        assert row["commit_s"]["min"] > 0 and row["commit_one_s"]["min"] > 0
    assert isinstance(result["met"], bool)


@pytest.mark.slow
def test_throughput_scenario_drains_every_job_and_counts_submits() -> None:
    # 3,000 jobs: a drain of a few hundred can end within one scheduler tick, and read no CPU at all.
    result = throughput.bench_throughput(jobs=3000, repeat=1, submit_batched=2000)
    assert result["jobs"] == 3000
    assert result["swarmd_jobs_per_s"]["median"] > 0 and result["floor_jobs_per_s"]["median"] > 0
    assert result["submit"]["single_jobs_per_s"] > 0 and result["submit"]["batched_jobs_per_s"] > 0
    # the API socket against direct, same run (its target, >= 0.5x, is the bench's to judge)
    assert result["submit"]["socket_batched_jobs_per_s"] > 0
    assert result["submit"]["socket_to_direct"] == pytest.approx(
        result["submit"]["socket_batched_jobs_per_s"] / result["submit"]["direct_batched_jobs_per_s_daemon_running"]
    )
    assert "through the API socket" in runner.summary({"scenario": "throughput", "target": "", **result})
    _assert_daemon_cpu_measured(result)


def _assert_daemon_cpu_measured(result: dict[str, Any]) -> None:
    """The daemon's CPU over the drain was read: some per job, and at most every core busy."""
    cpu, cores = result["cpu_per_job_s"]["median"], result["cores"]["median"]
    assert cpu > 0 and 0 < cores <= (os.cpu_count() or 1)
    # cores = CPU / drain time, and drain time = jobs / rate
    assert cores == pytest.approx(cpu * result["swarmd_jobs_per_s"]["median"])


@pytest.mark.slow
@pytest.mark.redis
def test_redis_throughput_scenario_drains_every_job_with_the_daemons_cpu() -> None:
    require_redis()
    result = redis_bench.bench_redis_throughput(jobs=400, repeat=1)
    assert result["jobs"] == 400 and result["swarmd_jobs_per_s"]["median"] > 0
    _assert_daemon_cpu_measured(result)


@pytest.mark.slow
def test_a_drain_that_never_completes_is_an_error_and_leaves_no_daemon_running(tmp_path: Path) -> None:
    state = tmp_path / "state"
    helpers.queue_noops(state, 3)
    with pytest.raises(helpers.BenchError, match="did not reach 4 entries"):
        throughput.drain_rate(state, 4, timeout=0.5)  # one job more than there are
    assert _daemons_on(state) == []


def _daemons_on(state: Path) -> list[int]:
    """Processes whose command line names this state directory."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if str(state).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


def test_a_local_daemons_cpu_time_is_read_from_proc(tmp_path: Path) -> None:
    with LocalDaemon(tmp_path / "state") as daemon:
        assert daemon.cpu_seconds() > 0.01  # starting Python and importing swarmd alone takes that


@pytest.mark.slow
def test_e2e_scenario_measures_whole_swarms_through_a_daemon() -> None:
    result = e2e.bench_e2e(repeat=2)
    assert result["swarmd_overhead_s"]["n"] == 2 and result["submit_s"]["n"] == 2
    # a swarm of 10 ms agents cannot come back in less than its agents' time
    assert result["swarmd_overhead_s"]["min"] > -helpers.AGENT_SECONDS
    # the submit is the first part of each round trip, not all of it
    assert 0 < result["submit_s"]["max"] < result["swarmd_overhead_s"]["max"] + helpers.AGENT_SECONDS


def test_the_ledger_count_the_bench_watches_is_the_number_of_entries(tmp_path: Path) -> None:
    async def append(n: int) -> None:
        ledger = DurableLedger(tmp_path / "swarmd.db")
        for i in range(n):
            await ledger.append({"agent_gid": f"GID-{i}"})
        await ledger.close()

    helpers.run_uvloop(append(0))
    conn = sqlite3.connect(tmp_path / "swarmd.db")
    assert helpers.ledger_count(conn) == 0
    helpers.run_uvloop(append(3))
    assert helpers.ledger_count(conn) == 3
    assert helpers.await_count(conn, 3, timeout=1, step=helpers.COARSE_STEP) > 0
    conn.close()


def test_waiting_for_ledger_entries_that_never_come_is_an_error_not_a_number(tmp_path: Path) -> None:
    with Client(tmp_path / "state") as client:
        client.submit("echo", gid="G")  # creates the database; nothing drains it
    conn = sqlite3.connect(tmp_path / "state" / "swarmd.db")
    with pytest.raises(helpers.BenchError, match="did not reach 1 entries"):
        helpers.await_count(conn, 1, timeout=0.2)
    conn.close()


@pytest.mark.parametrize("mode", ["none", "default", "sampled", "full"])
def test_instrumentation_drain_checks_its_ledger_and_spans(mode: str) -> None:
    assert drain(300, mode) > 0  # raises if a job is missing from the ledger or (full) a span was not exported


def test_instrumentation_shares_are_paired_within_a_round(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's speed drifts between rounds; each share is taken against the ``none`` drain
    of its own round, so the drift cancels. (The drains themselves are exercised above; here a
    scripted drain makes the arithmetic exact.)"""
    cost = {"none": 10.0, "default": 12.5, "sampled": 20.0, "full": 40.0}  # us per job
    calls: list[str] = []

    def scripted(jobs: int, mode: str) -> float:
        calls.append(mode)
        drift = 1 + ((len(calls) - 1) // 4) * 0.5  # every round runs slower than the one before
        return 1e6 / (cost[mode] * drift)

    monkeypatch.setattr("swarmd.bench.instrumentation.drain", scripted)
    result = instrumentation.bench_instrumentation(jobs=100, repeat=4)
    assert len(calls) == 4 + 4 * 4  # warm-up, then every mode once per round
    for mode, expected in (("default", 0.2), ("sampled", 0.5), ("full", 0.75)):
        assert result["instrumentation_share"][mode] == pytest.approx(expected)
        assert result["share_per_round"][mode] == pytest.approx([expected] * 4)
    assert result["met"] is False  # sampled costs half of every job here


def test_run_bench_refuses_an_unknown_scenario_and_prints_json_per_scenario() -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert runner.run_bench("nope") == 2
    assert "unknown scenario 'nope'" in err.getvalue()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert runner.run_bench("swarm", as_json=True, agents=[5], repeat=2) == 0
    [line] = out.getvalue().splitlines()
    result = msgspec.json.decode(line)
    assert result["scenario"] == "swarm" and "met" in result
    # the machine is described well enough to compare runs across machines
    machine = result["machine"]
    assert machine["cpus"] >= 1 and machine["sqlite"] == sqlite3.sqlite_version
    assert 0 < machine["python_loop_s"] < 60
