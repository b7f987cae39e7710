"""The lock-free histogram and counter of the per-job series expose exactly what
prometheus-client's own types expose for the same observations."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from swarmd.telemetry.loop_metrics import LoopCounter, LoopHistogram
from swarmd.telemetry.metrics import OVERHEAD_BUCKETS

#: Below, on, between and above the bounds, zero, negative and NaN.
AMOUNTS = (0.0, 5e-6, 10e-6, 10.000001e-6, 42e-6, 1e-3, 0.7, 5.0, 7.5, 1e9, -1.0, math.nan)


def _exposition(registry: CollectorRegistry, name: str) -> str:
    """The text exposition under a neutral name, without the ``_created`` times."""
    lines = generate_latest(registry).decode().replace(name, "x").splitlines()
    return "\n".join(line for line in lines if "_created" not in line)


def test_a_loop_histogram_buckets_every_amount_as_the_locked_one_does() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    locked = Histogram("locked", "h", ["agent"], buckets=OVERHEAD_BUCKETS, registry=theirs).labels("a")
    loop = LoopHistogram("loop", "h", ["agent"], buckets=OVERHEAD_BUCKETS, registry=ours).labels("a")
    for amount in AMOUNTS:
        locked.observe(amount)
        loop.observe(amount)
    assert _exposition(ours, "loop") == _exposition(theirs, "locked")


def test_a_loop_histogram_keeps_an_exemplar_on_its_bucket() -> None:
    registry = CollectorRegistry()
    loop = LoopHistogram("loop", "h", buckets=OVERHEAD_BUCKETS, registry=registry)
    loop.observe(42e-6, {"trace_id": "abc"})
    loop.observe(43e-6)
    text = generate_openmetrics(registry).decode()  # type: ignore[no-untyped-call]  # untyped upstream
    assert 'loop_bucket{le="5e-05"} 2.0 # {trace_id="abc"} 4.2e-05' in text


def test_a_loop_counter_counts_as_the_locked_one_does_and_refuses_to_go_down() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    locked = Counter("locked", "c", ["agent", "outcome"], registry=theirs).labels("a", "succeeded")
    loop = LoopCounter("loop", "c", ["agent", "outcome"], registry=ours).labels("a", "succeeded")
    for amount in (1, 1, 2.5, 0):
        locked.inc(amount)
        loop.inc(amount)
    loop.inc(1, {"trace_id": "abc"})
    locked.inc(1, {"trace_id": "abc"})
    assert _exposition(ours, "loop") == _exposition(theirs, "locked")
    with pytest.raises(ValueError, match="negative"):
        loop.inc(-1)


def test_the_labelled_parent_of_a_loop_series_is_not_observable() -> None:
    histogram = LoopHistogram("loop", "h", ["agent"], registry=CollectorRegistry())
    counter = LoopCounter("loopc", "c", ["agent"], registry=CollectorRegistry())
    with pytest.raises(ValueError, match="missing label values"):
        histogram.observe(1.0)
    with pytest.raises(ValueError, match="missing label values"):
        counter.inc()
