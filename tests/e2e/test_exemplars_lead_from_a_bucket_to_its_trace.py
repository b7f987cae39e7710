"""Issue 21 end to end: from a histogram bucket in Prometheus to the trace of the job in it.

A real daemon exports its spans over OTLP/HTTP to the test's receiver (support.otlp) and is
scraped every second by a real Prometheus (support.prometheus, skipped without the program,
failed under ``SWARMD_TEST_STRICT=1``) started with ``--enable-feature=exemplar-storage``, which
asks for the OpenMetrics exposition and keeps the exemplars. The producer is the CLI, which does
not trace: twenty single jobs and a swarm of fifty submitted with ``--swarm``.

Then ``/api/v1/query_exemplars`` for the overhead histograms returns trace ids, and every one of
them is a trace the receiver got, whose ``process`` span is a job of the bucket's agent that the
ledger recorded, with the exemplar's value inside the bucket; the swarm arrives as one trace of
fifty ``process`` spans under one swarm span, at which the swarm-overhead exemplar points.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from support.harness import Daemon, ledger, ledger_count, submit, wait_until
from support.otlp import OtlpReceiver, attrs
from support.prometheus import Prometheus
from support.services import require_tool

from swarmd.telemetry.metrics import OVERHEAD_BUCKETS, QUEUE_WAIT_BUCKETS

pytestmark = [pytest.mark.slow, pytest.mark.prometheus, pytest.mark.timeout(120)]

SINGLE: Final = 20
SWARM: Final = 50
#: The histograms whose exemplars are checked, with their bucket bounds.
HISTOGRAMS: Final = {
    "swarmd_scheduling_overhead_seconds": OVERHEAD_BUCKETS,
    "swarmd_queue_wait_seconds": QUEUE_WAIT_BUCKETS,
}


def scrape_config(target: str) -> dict[str, Any]:
    """Prometheus scraping ``target`` every second (OpenMetrics first, as it asks by default)."""
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "swarmd",
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "static_configs": [{"targets": [target]}],
            }
        ],
    }


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as started:
        yield started


def exemplars(prometheus: Prometheus, metric: str, since: float) -> list[tuple[dict[str, str], dict[str, Any]]]:
    """(series labels, exemplar) of every exemplar Prometheus holds for ``metric``'s buckets."""
    data = prometheus.api("query_exemplars", query=f"{metric}_bucket", start=str(since), end=str(time.time() + 60))
    return [(series["seriesLabels"], exemplar) for series in data for exemplar in series["exemplars"]]


def bucket_holds(bounds: tuple[float, ...], le: str, value: float) -> bool:
    """Whether ``value`` is an observation of the bucket ``le`` alone (not of a smaller one)."""
    upper = float(le)
    lower = max((bound for bound in bounds if bound < upper), default=0.0)
    return lower < value <= upper


def test_exemplars_lead_to_the_trace_of_the_job_their_bucket_measured(tmp_path: Path, receiver: OtlpReceiver) -> None:
    require_tool("prometheus")
    state = tmp_path / "state"
    otel = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
    }
    since = time.time() - 1
    daemon = Daemon(state, "--agents", "support.agents", env=otel).start()
    prometheus = Prometheus(tmp_path, scrape_config(f"127.0.0.1:{daemon.port}"), "--enable-feature=exemplar-storage")
    try:
        prometheus.start()
        wait_until(lambda: prometheus.query('up{job="swarmd"} == 1') != [], timeout=30, what="the first scrape")
        submit(state, "echo", "GID-single", count=SINGLE)  # the CLI: no exporter, no producer span
        submit(state, "echo", "GID-swarm", "--swarm", count=SWARM)
        wait_until(lambda: ledger_count(state) == SINGLE + SWARM, what="every job")
        metrics = [*HISTOGRAMS, "swarmd_swarm_overhead_seconds"]

        def every_histogram_has_exemplars() -> bool:
            return all(exemplars(prometheus, metric, since) for metric in metrics)

        wait_until(every_histogram_has_exemplars, timeout=30, what="exemplars of every histogram")
        found = {metric: exemplars(prometheus, metric, since) for metric in metrics}
        scrape_errors = prometheus.query('scrape_samples_scraped{job="swarmd"} == 0 or up{job="swarmd"} == 0')
        assert daemon.stop() == 0  # the drain flushes the daemon's spans
    finally:
        prometheus.stop()
        daemon.ensure_dead()
    assert scrape_errors == [], f"Prometheus failed to scrape the OpenMetrics exposition: {prometheus.log()}"
    wait_until(lambda: len(receiver.named("process default")) == SINGLE + SWARM, what="every process span")
    wait_until(lambda: len(receiver.named("swarm default")) == 1, what="the swarm span")
    process = {(s.trace_id.hex(), s.span_id.hex()): s for s in receiver.named("process default")}
    entries = {entry["job_id"]: entry for entry in ledger(state)}

    # Every exemplar of the per-job histograms is the process span of a job of its bucket.
    for metric, bounds in HISTOGRAMS.items():
        assert found[metric], metric
        for series, exemplar in found[metric]:
            labels = exemplar["labels"]
            span = process[labels["trace_id"], labels["span_id"]]  # a trace the receiver got
            job = entries[attrs(span)["messaging.message.id"]]  # a job the ledger recorded...
            assert job["agent"] == series["agent"] == attrs(span)["swarmd.agent.name"]  # ...of that agent
            assert bucket_holds(bounds, series["le"], float(exemplar["value"])), (metric, series, exemplar)

    # The swarm is one trace: one swarm span, the fifty process spans of its members under it.
    (swarm_span,) = receiver.named("swarm default")
    swarm_id = attrs(swarm_span)["swarmd.swarm.id"]
    members = {job_id for job_id, entry in entries.items() if entry.get("swarm_id") == swarm_id}
    assert len(members) == SWARM
    assert attrs(swarm_span)["swarmd.swarm.size"] == SWARM
    assert swarm_span.parent_span_id == b""  # the root: the CLI opened no span
    in_trace = [s for s in process.values() if s.trace_id == swarm_span.trace_id]
    assert {attrs(s)["messaging.message.id"] for s in in_trace} == members
    assert all(s.parent_span_id == swarm_span.span_id for s in in_trace)
    assert all(swarm_span.start_time_unix_nano <= s.start_time_unix_nano for s in in_trace)
    assert all(s.end_time_unix_nano <= swarm_span.end_time_unix_nano for s in in_trace)
    # ...and the swarm-overhead exemplar points at it.
    (swarm_exemplar,) = [exemplar["labels"] for _, exemplar in found["swarmd_swarm_overhead_seconds"]]
    assert swarm_exemplar == {"trace_id": swarm_span.trace_id.hex(), "span_id": swarm_span.span_id.hex()}
