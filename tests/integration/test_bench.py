"""`swarmd bench` at small sizes: it measures real work, and refuses to report work that did not happen."""

from __future__ import annotations

import contextlib
import io
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import msgspec
import pytest
from support.services import require_redis

from swarmd.bench import e2e, helpers, instrumentation, runner, scale, swarm, throughput
from swarmd.bench import redis as redis_bench
from swarmd.bench.instrumentation import DrainCost, drain
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
    # (the in-memory ledger's swarms write nothing durable)
    assert result["ledger_entries"] == sum(3 * (n + n) + 2 * (n + n + 1) for n in (5, 20))
    series = ("swarmd_overhead_s", "floor_overhead_s", "no_ledger_overhead_s", "memory_ledger_overhead_s")
    for row in result["sizes"]:
        for name in (*series, "commit_s", "commit_one_s"):
            assert row[name]["n"] == 2, name
        floor, commit = row["floor_overhead_s"]["median"], row["commit_s"]["median"]
        assert row["ratio"] == pytest.approx(row["swarmd_overhead_s"]["median"] / floor)
        assert row["memory_ratio"] == pytest.approx(row["memory_ledger_overhead_s"]["median"] / floor)
        assert row["commit_bound_ratio"] == pytest.approx((floor + commit) / floor)
        assert row["durable_to_bound"] == pytest.approx(row["swarmd_overhead_s"]["median"] / (floor + commit))
        assert row["commit_s"]["min"] > 0 and row["commit_one_s"]["min"] > 0
    # the targets are judged on the size nearest the (50 agents; here the first)
    memory, durable = result["targets"]
    assert (memory["name"], memory["limit"], memory["measured"]) == (
        "memory_ledger",
        1.3,
        result["sizes"][0]["memory_ratio"],
    )
    assert (durable["limit"], durable["measured"]) == (1.15, result["sizes"][0]["durable_to_bound"])
    assert result["met"] == (memory["met"] and durable["met"])


@pytest.mark.slow
def test_throughput_scenario_drains_every_job_and_counts_submits() -> None:
    # 10,000 jobs: two workers on a loaded CI drained 3,000 before the bench's first look, which
    # left no CPU to measure (as the Redis test below found first).
    result = throughput.bench_throughput(jobs=10_000, repeat=1, submit_batched=2000)
    assert result["jobs"] == 10_000
    assert result["swarmd_jobs_per_s"]["median"] > 0 and result["floor_jobs_per_s"]["median"] > 0
    assert result["submit"]["single_jobs_per_s"] > 0 and result["submit"]["batched_jobs_per_s"] > 0
    # the API socket against direct, same run (its target, >= 0.5x, is the bench's to judge)
    assert result["submit"]["socket_batched_jobs_per_s"] > 0
    assert result["submit"]["socket_to_direct"] == pytest.approx(
        result["submit"]["socket_batched_jobs_per_s"] / result["submit"]["direct_batched_jobs_per_s_daemon_running"]
    )
    assert "through the API socket" in runner.summary({"scenario": "throughput", "target": "", **result})
    _assert_daemon_cpu_measured(result)
    # the target: the daemon's CPU per job against the floor's, both measured in this run
    assert result["floor_cpu_per_job_s"]["median"] > 0
    assert result["cpu_ratio"] == pytest.approx(
        result["cpu_per_job_s"]["median"] / result["floor_cpu_per_job_s"]["median"]
    )
    _assert_workers_targets(result)


def _assert_workers_targets(result: dict[str, Any]) -> None:
    """The --workers 2 targets are measured where serve offers the option, else null with why."""
    targets = {row["name"]: row for row in result["targets"]}
    for name in ("workers2_rate", "workers2_cpu"):
        if helpers.serve_offers_workers():
            assert targets[name]["measured"] > 0 and isinstance(targets[name]["met"], bool)
        else:
            assert targets[name]["met"] is None and "--workers" in targets[name]["why_unmeasured"]
            assert result["workers_2"] is None


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
    # 10,000 jobs (about 0.4 s a drain here): two workers drained 400, and under a loaded CI
    # even 3,000, before the bench's first look at the ledger, leaving no CPU to measure.
    result = redis_bench.bench_redis_throughput(jobs=10_000, repeat=1)
    assert result["jobs"] == 10_000 and result["swarmd_jobs_per_s"]["median"] > 0
    _assert_daemon_cpu_measured(result)
    _assert_workers_targets(result)


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
    # the target's bound: the floor + two durable commits of 50 entries, measured in the same rounds, + 1 ms
    assert result["commit_s"]["n"] == 2 and result["commit_s"]["min"] > 0
    bound = result["floor_overhead_s"]["median"] + 2 * result["commit_s"]["median"] + e2e.ALLOWANCE_S
    assert result["bound_s"] == pytest.approx(bound)
    [overhead] = result["targets"]
    assert overhead["measured"] == pytest.approx(result["swarmd_overhead_s"]["median"] / bound)
    assert result["met"] == (overhead["measured"] <= 1.0)


@pytest.mark.slow
def test_scale_scenario_has_every_agent_in_flight_at_once_and_times_how_soon() -> None:
    result = scale.bench_scale(agents=300, seconds=2.0)
    assert result["concurrent_peak"] == 300  # all of them running together: their sleeps overlap
    ramp, floor_ramp = result["swarmd_time_to_all_in_flight_s"], result["floor_time_to_all_in_flight_s"]
    assert 0 < ramp < 2.0 and 0 < floor_ramp < 2.0
    targets = {row["name"]: row for row in result["targets"]}
    assert targets["all_in_flight"]["measured"] == 1.0 and targets["all_in_flight"]["met"] is True
    assert targets["time_to_all_in_flight"]["measured"] == pytest.approx(ramp / floor_ramp)
    assert targets["rss_above_floor_per_agent"]["measured"] == result["rss_above_floor_per_agent_bytes"]


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
    cost = drain(300, mode)  # raises if a job is missing from the ledger or (full) a span was not exported
    assert cost.jobs_per_s > 0 and cost.cpu_per_job_s > 0


def test_instrumentation_extra_cpu_is_paired_within_a_round(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each mode's extra CPU per job is taken against the ``none`` drain of its own round, so
    that a drift between rounds stays out of it. (The drains themselves are exercised above;
    here a scripted drain makes the arithmetic exact.)"""
    cost = {"none": 10.0, "default": 12.0, "sampled": 19.0, "full": 40.0}  # us of CPU per job
    calls: list[str] = []

    def scripted(jobs: int, mode: str) -> DrainCost:
        calls.append(mode)
        drift = ((len(calls) - 1) // 4) * 5.0  # every round costs 5 us more than the one before
        return DrainCost(1e6 / (cost[mode] + drift), (cost[mode] + drift) * 1e-6)

    monkeypatch.setattr("swarmd.bench.instrumentation.drain", scripted)
    result = instrumentation.bench_instrumentation(jobs=100, repeat=4)
    assert len(calls) == 4 + 4 * 4  # warm-up, then every mode once per round
    for mode, extra in (("default", 2e-6), ("sampled", 9e-6), ("full", 30e-6)):
        assert result["extra_cpu_per_job_s"][mode] == pytest.approx(extra)
        assert result["extra_per_round"][mode] == pytest.approx([extra] * 4)
    assert [row["met"] for row in result["targets"]] == [True, True]  # <= 3 us and <= 10 us
    assert result["met"] is True
    cost["sampled"] = 21.0  # 11 us over none
    assert instrumentation.bench_instrumentation(jobs=100, repeat=4)["met"] is False


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


def test_a_target_is_met_unmet_or_null_with_the_reason() -> None:
    assert helpers.target("t", "<= 2x", 1.5, 2.0)["met"] is True
    assert helpers.target("t", "<= 2x", 2.5, 2.0)["met"] is False
    assert helpers.target("t", ">= 1.3x", 1.5, 1.3, at_least=True)["met"] is True
    assert helpers.target("t", ">= 1.3x", 1.2, 1.3, at_least=True)["met"] is False
    unmeasured = helpers.target("t", ">= 1.3x", None, 1.3, why_unmeasured="no --workers")
    assert unmeasured["met"] is None and unmeasured["why_unmeasured"] == "no --workers"
    met, unmet = helpers.target("a", "", 1, 2), helpers.target("b", "", 3, 2)
    assert helpers.all_met([met]) is True
    assert helpers.all_met([met, unmeasured]) is None
    assert helpers.all_met([met, unmeasured, unmet]) is False


def test_bench_all_json_is_one_document_with_every_target() -> None:
    results: list[dict[str, Any]] = [
        {"scenario": "swarm", "targets": [helpers.target("memory_ledger", "<= 1.3x", 1.2, 1.3)], "met": True},
        {"scenario": "throughput", "targets": [helpers.target("workers2_rate", "", None, 1.3, at_least=True)]},
    ]
    document = runner.run_document(results, {"cpus": 2}, 12.0)
    assert document["command"] == "swarmd bench all --json" and document["machine"] == {"cpus": 2}
    assert [(row["scenario"], row["name"]) for row in document["targets"]] == [
        ("swarm", "memory_ledger"),
        ("throughput", "workers2_rate"),
    ]
    assert document["met"] is None and document["scenarios"] == results
    failed = runner.run_document([*results, {"scenario": "scale", "error": "BenchError: x", "met": False}], {}, 1.0)
    assert failed["met"] is False and failed["errors"] == {"scale": "BenchError: x"}
    assert "memory_ledger" not in msgspec.json.encode(document["errors"]).decode()


def test_the_cpu_of_a_process_tree_includes_its_live_children() -> None:
    burn = "import sys, time\nwhile time.process_time() < 0.3: pass\nprint('ready', flush=True)\nsys.stdin.read()"
    child = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        own = helpers.tree_cpu_seconds(child.pid)
        assert own >= 0.3
        assert helpers.tree_cpu_seconds(os.getpid()) >= own  # this process's tree holds the child
    finally:
        child.communicate("")


def test_a_drain_the_bench_could_not_watch_is_refused_not_reported_as_free() -> None:
    """A drain that ended before the bench saw its first commit would read 0 CPU (a met CPU
    target): it is an error instead."""
    this_process = cast(LocalDaemon, SimpleNamespace(pid=os.getpid()))
    with pytest.raises(helpers.BenchError, match="nothing to measure"):
        helpers.measure_drain(this_process, 10, lambda: True, lambda n: 0.0)  # "done" before it began
