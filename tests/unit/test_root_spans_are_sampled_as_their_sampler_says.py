"""A run without a producer's traceparent is a root span; under the samplers swarmd decides for
itself it is kept or dropped exactly as the sampler would say for its trace id, and a dropped
one still makes its unsampled trace current."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_OFF,
    DEFAULT_ON,
    Decision,
    ParentBased,
    ParentBasedTraceIdRatio,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import SpanKind

from swarmd.telemetry.tracing import Tracing

SAMPLERS = {
    "ratio 0.3": TraceIdRatioBased(0.3),
    "always on": ALWAYS_ON,
    "always off": ALWAYS_OFF,
    "parent-based always on": DEFAULT_ON,
    "parent-based always off": DEFAULT_OFF,
    "parent-based ratio 0.3": ParentBasedTraceIdRatio(0.3),
    "parent-based over a ratio": ParentBased(TraceIdRatioBased(0.6)),
}


@pytest.mark.parametrize("name", SAMPLERS)
def test_a_root_run_is_kept_exactly_when_its_sampler_keeps_its_trace_id(name: str) -> None:
    sampler: Sampler = SAMPLERS[name]
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider)
    kept: dict[int, bool] = {}
    for i in range(300):
        run = tracing.consumer("default", job_id=f"j{i}", gid="GID-1", agent="echo", attempt=1, traceparent=None)
        with run as span:
            current = trace.get_current_span().get_span_context()
            assert current.is_valid and current.trace_flags.sampled is (span is not None)
            kept[current.trace_id] = span is not None
    assert len(kept) == 300  # a fresh trace per run
    for trace_id, was_kept in kept.items():
        decision = sampler.should_sample(Context(), trace_id, "process default", SpanKind.CONSUMER).decision
        assert was_kept is (decision is not Decision.DROP), hex(trace_id)
    exported = {span.context.trace_id for span in exporter.get_finished_spans() if span.context is not None}
    assert exported == {trace_id for trace_id, was_kept in kept.items() if was_kept}
    tracing.shutdown()
