"""swarmd.metrics: names, series up front, bounded labels, peak, buckets, exposition."""

from __future__ import annotations

import itertools
import platform

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry

from swarmd.telemetry.metrics import OUTCOMES, QUEUE_STATES, REJECT_REASONS, Metrics

AGENTS = ("echo", "sleep")


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    return Metrics(registry, agents=AGENTS, version="1.2.3", loop="uvloop")


def series_names(registry: CollectorRegistry) -> set[str]:
    return {s.name for family in registry.collect() for s in family.samples}


def label_values(registry: CollectorRegistry, label: str) -> set[str]:
    return {s.labels[label] for family in registry.collect() for s in family.samples if label in s.labels}


def test_every_agent_outcome_series_exists_at_zero(metrics: Metrics, registry: CollectorRegistry) -> None:
    value = registry.get_sample_value
    for agent in AGENTS:
        for outcome in OUTCOMES:
            assert value("swarmd_jobs_total", {"agent": agent, "outcome": outcome}) == 0
            labels = {"agent": agent, "outcome": outcome}
            assert value("swarmd_agent_duration_seconds_count", labels) == 0
        assert value("swarmd_scheduling_overhead_seconds_count", {"agent": agent}) == 0
        assert value("swarmd_queue_wait_seconds_count", {"agent": agent}) == 0
        assert value("swarmd_identity_violations_total", {"agent": agent}) == 0
        assert value("swarmd_circuit_state", {"agent": agent}) == 0
    for state in QUEUE_STATES:
        assert value("swarmd_queue_jobs", {"state": state}) == 0
    for reason in REJECT_REASONS:
        assert value("swarmd_rejected_jobs_total", {"reason": reason}) == 0
    for name in (
        "swarmd_swarm_overhead_seconds_count",
        "swarmd_agents_in_flight",
        "swarmd_concurrent_peak",
        "swarmd_concurrency_limit",
        "swarmd_ledger_index",
        "swarmd_ledger_commit_seconds_count",
        "swarmd_event_loop_lag_seconds_count",
        "swarmd_ready",
    ):
        assert value(name) == 0, name
    build = {"version": "1.2.3", "python": platform.python_version(), "loop": "uvloop"}
    assert value("swarmd_build_info", build) == 1


def test_agent_children_count_what_they_name(metrics: Metrics, registry: CollectorRegistry) -> None:
    am = metrics.agent("echo")
    am.scheduling_overhead.observe(75e-6)
    am.queue_wait.observe(0.002)
    am.record("succeeded", 0.01)
    am.record("failed", 0.5)
    am.jobs["retried"].inc()
    am.identity_violations.inc()
    am.set_circuit("open")
    value = registry.get_sample_value
    assert value("swarmd_scheduling_overhead_seconds_sum", {"agent": "echo"}) == 75e-6
    # 75 µs falls between the 50 µs and 100 µs bounds.
    assert value("swarmd_scheduling_overhead_seconds_bucket", {"agent": "echo", "le": "5e-05"}) == 0
    assert value("swarmd_scheduling_overhead_seconds_bucket", {"agent": "echo", "le": "0.0001"}) == 1
    assert value("swarmd_queue_wait_seconds_sum", {"agent": "echo"}) == 0.002
    assert value("swarmd_jobs_total", {"agent": "echo", "outcome": "succeeded"}) == 1
    assert value("swarmd_jobs_total", {"agent": "echo", "outcome": "failed"}) == 1
    assert value("swarmd_jobs_total", {"agent": "echo", "outcome": "retried"}) == 1
    assert value("swarmd_agent_duration_seconds_sum", {"agent": "echo", "outcome": "failed"}) == 0.5
    assert value("swarmd_identity_violations_total", {"agent": "echo"}) == 1
    assert value("swarmd_circuit_state", {"agent": "echo"}) == 2
    # The other agent is untouched.
    assert value("swarmd_jobs_total", {"agent": "sleep", "outcome": "succeeded"}) == 0
    assert value("swarmd_identity_violations_total", {"agent": "sleep"}) == 0


def test_unknown_agent_raises_and_creates_no_series(metrics: Metrics, registry: CollectorRegistry) -> None:
    before = prometheus_client.generate_latest(registry)
    with pytest.raises(KeyError):
        metrics.agent("ghost")
    assert "ghost" not in label_values(registry, "agent")
    assert metrics.agent_names == AGENTS
    after = prometheus_client.generate_latest(registry)
    assert before == after


def test_add_agent_creates_series_at_zero_and_is_idempotent(metrics: Metrics, registry: CollectorRegistry) -> None:
    assert registry.get_sample_value("swarmd_jobs_total", {"agent": "late", "outcome": "failed"}) is None
    am = metrics.add_agent("late")
    assert metrics.add_agent("late") is am
    assert metrics.agent("late") is am
    assert registry.get_sample_value("swarmd_jobs_total", {"agent": "late", "outcome": "failed"}) == 0
    assert label_values(registry, "agent") == {*AGENTS, "late"}


def test_in_flight_and_peak(metrics: Metrics, registry: CollectorRegistry) -> None:
    value = registry.get_sample_value
    for _ in range(3):
        metrics.job_started()
    assert (value("swarmd_agents_in_flight"), value("swarmd_concurrent_peak")) == (3, 3)
    metrics.job_finished()
    metrics.job_finished()
    assert (value("swarmd_agents_in_flight"), value("swarmd_concurrent_peak")) == (1, 3)
    metrics.job_started()
    metrics.job_started()
    assert (value("swarmd_agents_in_flight"), value("swarmd_concurrent_peak")) == (3, 3)
    metrics.job_started()
    assert (value("swarmd_agents_in_flight"), value("swarmd_concurrent_peak")) == (4, 4)
    for _ in range(4):
        metrics.job_finished()
    assert (value("swarmd_agents_in_flight"), value("swarmd_concurrent_peak")) == (0, 4)
    assert (metrics.in_flight, metrics.peak) == (0, 4)


def test_gauges_and_helpers(metrics: Metrics, registry: CollectorRegistry) -> None:
    value = registry.get_sample_value
    metrics.set_concurrency_limit(64)
    metrics.set_ledger_index(1234)
    metrics.observe_ledger_commit(0.003)
    metrics.observe_loop_lag(0.0007)
    metrics.observe_swarm_overhead(0.0004)
    metrics.set_ready(True)
    metrics.reject("oversized")
    metrics.reject("oversized")
    assert value("swarmd_concurrency_limit") == 64
    assert value("swarmd_ledger_index") == 1234
    assert value("swarmd_ledger_commit_seconds_sum") == 0.003
    assert value("swarmd_event_loop_lag_seconds_count") == 1
    assert value("swarmd_swarm_overhead_seconds_sum") == 0.0004
    assert value("swarmd_ready") == 1
    assert value("swarmd_rejected_jobs_total", {"reason": "oversized"}) == 2
    assert value("swarmd_rejected_jobs_total", {"reason": "malformed"}) == 0
    metrics.set_ready(False)
    assert value("swarmd_ready") == 0
    for limit in (64, 8, 8, 64):  # set per job: unchanged values skip the gauge, changes reach it
        metrics.set_concurrency_limit(limit)
        assert value("swarmd_concurrency_limit") == limit
    with pytest.raises(ValueError, match="'bogus'"):
        metrics.reject("bogus")
    assert "bogus" not in label_values(registry, "reason")


def test_queue_depths_are_a_snapshot(metrics: Metrics, registry: CollectorRegistry) -> None:
    value = registry.get_sample_value
    metrics.set_queue_depths({"ready": 5, "delayed": 2, "leased": 7, "dead": 1})
    assert [value("swarmd_queue_jobs", {"state": s}) for s in QUEUE_STATES] == [5, 2, 7, 1]
    metrics.set_queue_depths({"ready": 3})
    assert [value("swarmd_queue_jobs", {"state": s}) for s in QUEUE_STATES] == [3, 0, 0, 0]
    with pytest.raises(ValueError, match="'finished'"):
        metrics.set_queue_depths({"ready": 9, "finished": 1})
    assert value("swarmd_queue_jobs", {"state": "ready"}) == 3
    assert "finished" not in label_values(registry, "state")


@pytest.mark.parametrize("histogram", ["swarmd_scheduling_overhead_seconds", "swarmd_swarm_overhead_seconds"])
def test_overhead_buckets_separate_the_required_bounds(
    metrics: Metrics, registry: CollectorRegistry, histogram: str
) -> None:
    bounds = {
        float(s.labels["le"])
        for family in registry.collect()
        for s in family.samples
        if s.name == f"{histogram}_bucket"
    }
    required = {50e-6, 100e-6, 1e-3, 10e-3, 50e-3, 1.0}
    assert required <= bounds
    finite = sorted(b for b in bounds if b != float("inf"))
    # "A few in between": a bound inside every gap of 5x or more between required ones.
    ordered = sorted(required)
    for low, high in itertools.pairwise(ordered):
        if high / low >= 5:
            assert any(low < b < high for b in finite), (low, high)


def test_no_created_series(metrics: Metrics, registry: CollectorRegistry) -> None:
    metrics.agent("echo").record("succeeded", 0.01)
    text = prometheus_client.generate_latest(registry).decode()
    assert "swarmd_jobs_total" in text
    assert "_created" not in text
    assert not any(name.endswith("_created") for name in series_names(registry))


def test_default_registry_keeps_process_metrics() -> None:
    m = Metrics(agents=["echo"])
    names = series_names(m.registry)
    assert "process_cpu_seconds_total" in names
    assert "python_info" in names
    assert "python_gc_collections_total" in names
    assert "swarmd_jobs_total" in names
    assert "_created" not in prometheus_client.generate_latest(m.registry).decode()


def test_no_job_id_or_gid_ever_becomes_a_label(metrics: Metrics, registry: CollectorRegistry) -> None:
    am = metrics.agent("echo")
    before = len(series_names(registry)), sum(len(family.samples) for family in registry.collect())
    for i in range(100):
        metrics.job_started()
        am.scheduling_overhead.observe(i * 1e-6)
        am.record("succeeded", 0.001)
        metrics.job_finished()
    after = len(series_names(registry)), sum(len(family.samples) for family in registry.collect())
    assert before == after
    assert label_values(registry, "agent") == set(AGENTS)
