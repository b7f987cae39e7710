"""Exemplars: the trace and span ids a histogram observation carries, so that an operator can
go from a bucket (a slow p99) to the job that landed in it.

Only a recorded (sampled) span yields one: the per-job code passes the span it got from
`swarmd.telemetry.tracing.Tracing.consumer`, which is None when tracing is off or the run was
not sampled, and then observes with ``exemplar=None``, which costs prometheus-client nothing::

    exemplar = None if span is None else span_exemplar(span)
    histogram.observe(seconds, exemplar)

Exemplars appear only in the OpenMetrics exposition (a scraper asks for it in its ``Accept``
header); the plain text format leaves them out.
"""

from __future__ import annotations

from typing import Final

from opentelemetry.trace import Span, SpanContext

__all__ = ["SPAN_ID", "TRACE_ID", "context_exemplar", "span_exemplar"]

#: The exemplar label names, as Grafana and Prometheus expect them.
TRACE_ID: Final = "trace_id"
SPAN_ID: Final = "span_id"


def span_exemplar(span: Span | None) -> dict[str, str] | None:
    """``{"trace_id": <32 hex>, "span_id": <16 hex>}`` of a recorded span; None for no span."""
    if span is None:
        return None
    return context_exemplar(span.get_span_context())


def context_exemplar(context: SpanContext) -> dict[str, str]:
    """The exemplar labels naming the span of ``context``."""
    return {TRACE_ID: format(context.trace_id, "032x"), SPAN_ID: format(context.span_id, "016x")}
