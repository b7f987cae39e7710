"""`swarmd bench soak` reads the housekeeping holds from a daemon's /metrics text: per step the
count, the share within 5 ms and the highest bucket bound reached, summed over rounds; its
target is met only when at least 99% of all steps are within 5 ms."""

from __future__ import annotations

import math

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
    assert holds["all"] == {"count": 6, "within_target_share": 4 / 6, "highest_bucket_s": 0.015}


def test_a_hold_past_the_last_bucket_reads_infinite() -> None:
    holds = soak.upkeep_holds(soak.upkeep_buckets(_exposition({"purge_dead": [30.0]})))
    assert holds["purge_dead"]["count"] == 1 and math.isinf(holds["purge_dead"]["highest_bucket_s"])


def test_the_target_wants_99_percent_within_5_ms() -> None:
    def row(share: float | None) -> dict[str, object]:
        targets = soak._targets(0.0, 0, 0.0, 0.0, 1.0, share)
        return next(t for t in targets if t["name"] == "upkeep_step_holds")

    assert row(0.995)["met"] is True
    assert row(0.98)["met"] is False
    assert row(None)["met"] is None
