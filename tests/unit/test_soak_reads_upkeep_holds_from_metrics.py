"""`swarmd bench soak` reads the housekeeping holds from a daemon's /metrics text: per step the
count, the share within 5 ms and the highest bucket bound reached, summed over rounds; and the
hot path's group commits, whose p99 with retention on may exceed the one with it off by at
most 5 ms, quantiles read from the buckets as PromQL's histogram_quantile reads them."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from swarmd.bench import soak
from swarmd.telemetry.metrics import Metrics


def _exposition(observations: dict[str, list[float]]) -> str:
    metrics = Metrics(CollectorRegistry())
    for step, holds in observations.items():
        for seconds in holds:
            metrics.observe_upkeep_step(step, seconds)
    return generate_latest(metrics.registry).decode()


def test_holds_per_step_and_over_all_rounds() -> None:
    total: dict[str, dict[float, float]] = {}
    soak._add_buckets(total, soak.upkeep_buckets(_exposition({"forget": [0.001, 0.002, 0.0045], "vacuum": [0.0005]})))
    soak._add_buckets(total, soak.upkeep_buckets(_exposition({"forget": [0.007], "wal_checkpoint": [0.012]})))
    holds = soak.upkeep_holds(total)

    assert holds["forget"] == {"count": 4, "within_target_share": 0.75, "highest_bucket_s": 0.008}
    assert holds["vacuum"] == {"count": 1, "within_target_share": 1.0, "highest_bucket_s": 0.0005}
    assert holds["wal_checkpoint"] == {"count": 1, "within_target_share": 0.0, "highest_bucket_s": 0.015}
    assert holds["expire"] == {"count": 0, "within_target_share": None, "highest_bucket_s": None}
    # all: the steps on the backend's thread; the checkpoint runs aside, beside the hot path
    assert holds["all"] == {"count": 5, "within_target_share": 4 / 5, "highest_bucket_s": 0.008}


def test_a_hold_past_the_last_bucket_reads_infinite() -> None:
    holds = soak.upkeep_holds(soak.upkeep_buckets(_exposition({"purge_dead": [30.0]})))
    assert holds["purge_dead"]["count"] == 1 and math.isinf(holds["purge_dead"]["highest_bucket_s"])


def _commit_buckets(seconds: list[float]) -> dict[float, float]:
    metrics = Metrics(CollectorRegistry())
    for value in seconds:
        metrics.ledger_commit.observe(value)
    return soak.histogram_buckets(generate_latest(metrics.registry).decode(), soak.COMMIT_METRIC)["all"]


def test_commit_quantiles_are_read_linearly_within_their_bucket() -> None:
    buckets = _commit_buckets([0.002] * 50 + [0.007] * 50)  # 50 in (1 ms, 2.5 ms], 50 in (5 ms, 10 ms]
    assert soak.bucket_quantile(0.5, buckets) == 0.0025  # the rank ends the (1 ms, 2.5 ms] bucket
    assert soak.bucket_quantile(0.99, buckets) == pytest.approx(0.005 + 0.005 * 49 / 50)
    assert soak.bucket_quantile(0.5, {float("inf"): 0.0}) is None
    past = _commit_buckets([30.0])  # beyond the last bound: the last finite bound, as PromQL says
    assert soak.bucket_quantile(0.99, past) == 2.5


def test_the_targets_allow_5_ms_more_at_the_hot_paths_median_and_p99() -> None:
    def rows(on: float | None, off: float | None) -> list[object]:
        commits = {"on": {"p50": on, "p99": on}, "off": {"p50": off, "p99": off}}
        targets = soak._targets(0.0, 0, 0.0, 0.0, 1.0, soak._added(commits, "p50"), soak._added(commits, "p99"))
        return [t["met"] for t in targets if t["name"] in ("commit_p50_added", "commit_p99_added")]

    assert rows(0.024, 0.020) == [True, True]
    assert rows(0.031, 0.020) == [False, False]
    assert rows(None, 0.020) == [None, None]
