"""Histogram observations of sampled jobs carry an exemplar naming the job's span; unsampled
jobs carry none; a swarm whose producer did not trace is one trace under one swarm span.

An in-process worker drains a real SQLite queue (burst mode) with real metrics and an SDK
tracer provider exporting to memory; the exemplars are read back from the OpenMetrics
exposition that prometheus-client writes, the spans from the exporter.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBasedTraceIdRatio, Sampler
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from swarmd.builtin_agents import register_builtins
from swarmd.config import Settings
from swarmd.model import Job, new_job, new_job_id
from swarmd.queue.sqlite.backend import SqliteBackend
from swarmd.registry import Registry
from swarmd.runtime.worker import Worker
from swarmd.telemetry.metrics import Metrics
from swarmd.telemetry.swarm_trace import swarm_span_ids, swarm_traceparent
from swarmd.telemetry.tracing import Tracing

#: The histograms whose buckets carry exemplars.
EXEMPLAR_HISTOGRAMS = (
    "swarmd_scheduling_overhead_seconds",
    "swarmd_queue_wait_seconds",
    "swarmd_agent_duration_seconds",
    "swarmd_swarm_overhead_seconds",
)
SWARM_SIZE = 5


def swarm(size: int = SWARM_SIZE) -> list[Job]:
    """A swarm as `Client.submit_many(..., swarm=True)` makes it without a tracing producer."""
    swarm_id = new_job_id()
    jobs = [new_job(agent="echo", gid=f"GID-s{i}", swarm_id=swarm_id, swarm_size=size) for i in range(size)]
    return [job.__class__(**{**_fields(job), "enqueued_at": jobs[0].enqueued_at}) for job in jobs]


def _fields(job: Job) -> dict[str, Any]:
    return {name: getattr(job, name) for name in job.__struct_fields__}


async def drain(state: Path, jobs: list[Job], sampler: Sampler | None) -> tuple[Metrics, list[ReadableSpan]]:
    """Run ``jobs`` to their end on a worker traced with ``sampler`` (None: tracing off)."""
    exporter = InMemorySpanExporter()
    tracing = Tracing(None)
    if sampler is not None:
        provider = TracerProvider(sampler=sampler)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracing = Tracing(provider)
    registry = Registry()
    register_builtins(registry)
    metrics = Metrics(CollectorRegistry(), agents=registry.names())
    state.mkdir(mode=0o700)
    backend = SqliteBackend(state)
    await backend.open()
    try:
        await backend.submit(jobs)
        await Worker(backend, registry, Settings(), metrics, tracing, burst=True).run()
    finally:
        await backend.close()
    tracing.shutdown()
    return metrics, list(exporter.get_finished_spans())


def exemplars(metrics: Metrics) -> Iterator[tuple[str, dict[str, str], float, dict[str, str]]]:
    """(histogram, bucket labels, observed value, exemplar labels) of every exemplar exposed."""
    text = generate_openmetrics(metrics.registry).decode()  # type: ignore[no-untyped-call]  # untyped upstream
    for family in text_string_to_metric_families(text):  # type: ignore[no-untyped-call]
        for sample in family.samples:
            if sample.exemplar is not None:
                yield family.name, sample.labels, sample.exemplar.value, sample.exemplar.labels


async def test_every_exemplar_names_the_sampled_span_of_the_job_in_its_bucket(tmp_path: Path) -> None:
    plain = [new_job(agent="echo", gid=f"GID-{i}") for i in range(20)]
    members = swarm()
    metrics, spans = await drain(tmp_path / "state", plain + members, ALWAYS_ON)
    process = {f"{s.context.trace_id:032x}/{s.context.span_id:016x}": s for s in spans if s.name == "process default"}
    assert len(process) == len(plain) + SWARM_SIZE
    found: dict[str, int] = {}
    for histogram, labels, value, exemplar in exemplars(metrics):
        found[histogram] = found.get(histogram, 0) + 1
        assert float(labels["le"]) >= value  # the exemplar's value falls in its bucket
        key = f"{exemplar['trace_id']}/{exemplar['span_id']}"
        if histogram == "swarmd_swarm_overhead_seconds":
            (swarm_span,) = [s for s in spans if s.name == "swarm default"]
            assert key == f"{swarm_span.context.trace_id:032x}/{swarm_span.context.span_id:016x}"
            continue
        span = process[key]  # a span that was exported...
        assert span.attributes is not None
        assert span.attributes["swarmd.agent.name"] == labels["agent"]  # ...of a job of that agent
        if histogram == "swarmd_agent_duration_seconds":
            assert span.end_time is not None and span.start_time is not None
            assert value <= (span.end_time - span.start_time) / 1e9  # the handler ran inside its span
    assert set(found) == set(EXEMPLAR_HISTOGRAMS)


async def test_a_swarm_without_a_producer_span_is_one_trace_under_one_swarm_span(tmp_path: Path) -> None:
    members = swarm()
    swarm_id = members[0].swarm_id
    assert swarm_id is not None
    _, spans = await drain(tmp_path / "state", members, ALWAYS_ON)
    (root,) = [s for s in spans if s.name == "swarm default"]
    process = [s for s in spans if s.name == "process default"]
    assert len(process) == SWARM_SIZE
    assert (root.context.trace_id, root.context.span_id) == swarm_span_ids(swarm_id)
    assert root.parent is None
    assert root.attributes is not None
    assert root.attributes["swarmd.swarm.id"] == swarm_id
    assert root.attributes["swarmd.swarm.size"] == SWARM_SIZE
    assert root.start_time == int(members[0].enqueued_at * 1e9)  # from the swarm's enqueue time...
    for span in process:
        assert span.parent is not None and span.parent.span_id == root.context.span_id
        assert span.context.trace_id == root.context.trace_id
        assert root.end_time is not None and span.end_time is not None
        assert span.end_time <= root.end_time  # ...to past its last member's end


async def test_a_swarm_of_a_tracing_producer_keeps_its_trace(tmp_path: Path) -> None:
    producer = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    members = [job.__class__(**{**_fields(job), "traceparent": producer}) for job in swarm()]
    metrics, spans = await drain(tmp_path / "state", members, ALWAYS_ON)
    (root,) = [s for s in spans if s.name == "swarm default"]
    assert root.context.trace_id == int("ab" * 16, 16)
    assert root.parent is not None and root.parent.span_id == int("cd" * 8, 16)
    assert all(s.context.trace_id == root.context.trace_id for s in spans)
    (swarm_exemplar,) = [e for h, _, _, e in exemplars(metrics) if h == "swarmd_swarm_overhead_seconds"]
    assert swarm_exemplar == {"trace_id": "ab" * 16, "span_id": f"{root.context.span_id:016x}"}


@pytest.mark.parametrize("sampler", [None, ALWAYS_OFF], ids=["tracing off", "nothing sampled"])
async def test_unsampled_jobs_add_no_exemplar_and_the_plain_format_has_none(
    tmp_path: Path, sampler: Sampler | None
) -> None:
    metrics, spans = await drain(tmp_path / "state", [new_job(agent="echo", gid="GID-1"), *swarm()], sampler)
    assert spans == []
    assert list(exemplars(metrics)) == []
    (family,) = metrics.swarm_overhead.collect()
    assert {s.name: s.value for s in family.samples}["swarmd_swarm_overhead_seconds_count"] == 1  # observed


async def test_with_some_jobs_sampled_only_theirs_have_exemplars(tmp_path: Path) -> None:
    plain = [new_job(agent="echo", gid=f"GID-{i}") for i in range(200)]
    metrics, spans = await drain(tmp_path / "state", plain, ParentBasedTraceIdRatio(0.1))
    sampled = {f"{s.context.trace_id:032x}" for s in spans}
    assert 0 < len(sampled) < len(plain)
    named = {e["trace_id"] for _, _, _, e in exemplars(metrics)}
    assert named and named <= sampled
    assert b"trace_id" not in generate_latest(metrics.registry)  # the text format stays as it was


def test_the_swarm_parent_is_sampled_as_the_daemon_decides_for_its_trace() -> None:
    swarm_id = new_job_id()
    assert Tracing(None).swarm_parent(swarm_id) is None
    on, off = TracerProvider(sampler=ALWAYS_ON), TracerProvider(sampler=ALWAYS_OFF)
    assert Tracing(on).swarm_parent(swarm_id) == swarm_traceparent(swarm_id, sampled=True)
    assert Tracing(off).swarm_parent(swarm_id) == swarm_traceparent(swarm_id, sampled=False)
    assert swarm_traceparent(swarm_id) == swarm_traceparent(swarm_id)  # any daemon derives the same ids
    assert swarm_traceparent(swarm_id) != swarm_traceparent(new_job_id())
