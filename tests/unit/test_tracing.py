"""swarmd.tracing: producer/consumer spans, attributes, parenting, env config, traceparent."""

from __future__ import annotations

import asyncio
import http.server
import sys
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    Decision,
    ParentBasedTraceIdRatio,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Span, SpanKind, StatusCode

from swarmd.telemetry.tracing import Tracing, TracingConfigError, parse_traceparent

VALID_TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracing(exporter: InMemorySpanExporter) -> Tracing:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider)


def consume(tracing: Tracing, traceparent: str | None, **over: object) -> AbstractContextManager[Span | None]:
    kwargs: dict[str, object] = {
        "job_id": "j-1",
        "gid": "gid-7",
        "agent": "echo",
        "attempt": 2,
        "traceparent": traceparent,
    }
    kwargs.update(over)
    return tracing.consumer("default", **kwargs)  # type: ignore[arg-type]


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    [span] = [s for s in spans if s.name == name]
    return span


def test_producer_and_consumer_share_the_trace_parent_and_link(
    tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    with tracing.producer("default") as traceparent:
        pass
    assert traceparent is not None
    with consume(tracing, traceparent) as span:
        assert span is not None
    spans = exporter.get_finished_spans()
    send, process = by_name(spans, "send default"), by_name(spans, "process default")
    assert send.kind is SpanKind.PRODUCER and process.kind is SpanKind.CONSUMER
    assert send.context is not None and process.context is not None
    assert traceparent == (
        f"00-{send.context.trace_id:032x}-{send.context.span_id:016x}-{send.context.trace_flags:02x}"
    )
    assert process.context.trace_id == send.context.trace_id
    assert process.parent is not None
    assert (process.parent.trace_id, process.parent.span_id) == (
        send.context.trace_id,
        send.context.span_id,
    )
    [link] = process.links
    assert (link.context.trace_id, link.context.span_id) == (
        send.context.trace_id,
        send.context.span_id,
    )


def test_attributes_are_exact(tracing: Tracing, exporter: InMemorySpanExporter) -> None:
    with tracing.producer("q1") as traceparent:
        pass
    with consume(tracing, traceparent, job_id="job-42", gid="g-1", agent="summarize", attempt=3):
        pass
    spans = exporter.get_finished_spans()
    assert dict(by_name(spans, "send q1").attributes or {}) == {
        "messaging.system": "swarmd",
        "messaging.operation.name": "send",
        "messaging.destination.name": "q1",
    }
    assert dict(by_name(spans, "process default").attributes or {}) == {
        "messaging.system": "swarmd",
        "messaging.operation.name": "process",
        "messaging.destination.name": "default",
        "messaging.message.id": "job-42",
        "swarmd.agent.gid": "g-1",
        "swarmd.agent.name": "summarize",
        "swarmd.job.attempt": 3,
    }


def test_outcome_error_and_events(tracing: Tracing, exporter: InMemorySpanExporter) -> None:
    with consume(tracing, VALID_TP) as span:
        tracing.event(span, "swarmd.identity_violation", {"expected_gid": "a", "found_gid": "b"})
        tracing.set_outcome(span, "failed", "ValueError")
    with consume(tracing, VALID_TP, job_id="j-2") as span:
        tracing.set_outcome(span, "succeeded", None)
    failed, ok = exporter.get_finished_spans()
    assert failed.attributes is not None and ok.attributes is not None
    assert failed.attributes["swarmd.job.outcome"] == "failed"
    assert failed.attributes["error.type"] == "ValueError"
    assert failed.status.status_code is StatusCode.ERROR
    [event] = failed.events
    assert event.name == "swarmd.identity_violation"
    assert dict(event.attributes or {}) == {"expected_gid": "a", "found_gid": "b"}
    assert ok.attributes["swarmd.job.outcome"] == "succeeded"
    assert "error.type" not in ok.attributes
    assert ok.status.status_code is StatusCode.UNSET


def test_handler_span_is_a_child_of_the_consumer_span(tracing: Tracing, exporter: InMemorySpanExporter) -> None:
    assert tracing.provider is not None
    handler_tracer = tracing.provider.get_tracer("my.handler")
    with consume(tracing, VALID_TP) as span:
        assert span is not None
        assert trace.get_current_span() is span
        with handler_tracer.start_as_current_span("call llm"):
            pass
    spans = exporter.get_finished_spans()
    child, process = by_name(spans, "call llm"), by_name(spans, "process default")
    assert process.context is not None and child.parent is not None
    assert child.parent.span_id == process.context.span_id
    assert child.context is not None and child.context.trace_id == int(VALID_TP[3:35], 16)
    assert trace.get_current_span() is trace.INVALID_SPAN  # nothing leaks out of the block


def test_an_escaping_exception_is_recorded_and_reraised(tracing: Tracing, exporter: InMemorySpanExporter) -> None:
    with pytest.raises(KeyError), consume(tracing, VALID_TP):
        raise KeyError("x")
    with pytest.raises(asyncio.CancelledError), consume(tracing, VALID_TP, job_id="j-2"):
        raise asyncio.CancelledError
    failed, cancelled = exporter.get_finished_spans()
    assert failed.status.status_code is StatusCode.ERROR
    assert [e.name for e in failed.events] == ["exception"]
    assert cancelled.status.status_code is StatusCode.UNSET  # cancellation is not an error
    assert cancelled.end_time is not None


@pytest.mark.parametrize(
    "bad",
    [
        "garbage",
        "",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "x" * 10_000,
    ],
)
def test_malformed_traceparent_starts_a_fresh_trace(tracing: Tracing, exporter: InMemorySpanExporter, bad: str) -> None:
    with consume(tracing, bad) as span:
        assert span is not None
    [process] = exporter.get_finished_spans()
    assert process.parent is None
    assert process.links == ()
    assert process.context is not None
    assert process.context.trace_id != int(VALID_TP[3:35], 16)
    assert [e.name for e in process.events] == (["swarmd.traceparent.malformed"] if bad else [])


def test_no_traceparent_is_a_root_span_even_inside_another_span(
    tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    assert tracing.provider is not None
    with tracing.provider.get_tracer("t").start_as_current_span("puller"), consume(tracing, None):
        pass
    process = by_name(exporter.get_finished_spans(), "process default")
    assert process.parent is None and process.links == ()


def test_sampled_out_spans_still_propagate(exporter: InMemorySpanExporter) -> None:
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider)
    with tracing.producer("default") as traceparent:
        pass
    assert traceparent is not None
    parsed = parse_traceparent(traceparent)
    assert parsed is not None and parsed[2] & 0x01 == 0  # not sampled
    with consume(tracing, traceparent):
        pass
    assert exporter.get_finished_spans() == ()


def test_the_sampler_decides_before_a_span_is_built(exporter: InMemorySpanExporter) -> None:
    """A dropped run yields None but still makes its (unsampled) trace current; a kept one is
    built by the SDK on the very trace id that was sampled, so the ratio is not applied twice."""
    sampler = TraceIdRatioBased(0.5)
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider)
    decided: dict[int, bool] = {}
    for _ in range(400):
        with consume(tracing, None) as span:
            current = trace.get_current_span().get_span_context()
            assert current.is_valid
            decided[current.trace_id] = span is not None
            assert current.trace_flags.sampled is (span is not None)
            assert current.trace_flags.random_trace_id
    exported = {s.context.trace_id for s in exporter.get_finished_spans() if s.context is not None}
    assert exported == {trace_id for trace_id, kept in decided.items() if kept}
    assert all(kept is ((trace_id & 0xFFFF_FFFF_FFFF_FFFF) < sampler.bound) for trace_id, kept in decided.items())
    assert 100 < len(exported) < 300  # about half: the SDK did not sample a second time


def _decisions(tracing: Tracing, runs: int) -> dict[int, bool]:
    decided: dict[int, bool] = {}
    for _ in range(runs):
        with consume(tracing, None) as span:
            decided[trace.get_current_span().get_span_context().trace_id] = span is not None
    return decided


def test_two_tracings_on_one_provider_both_sample_on_the_drawn_trace_id(exporter: InMemorySpanExporter) -> None:
    sampler = TraceIdRatioBased(0.5)
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    first, second = Tracing(provider), Tracing(provider)
    decided = _decisions(first, 100) | _decisions(second, 100)
    exported = {s.context.trace_id for s in exporter.get_finished_spans() if s.context is not None}
    assert exported == {trace_id for trace_id, kept in decided.items() if kept}
    assert len(decided) == 200  # no trace id handed out twice


def test_a_tracer_made_before_tracing_leaves_the_decision_to_the_sdk_and_leaks_no_trace_id(
    exporter: InMemorySpanExporter,
) -> None:
    provider = TracerProvider(sampler=TraceIdRatioBased(0.5))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.get_tracer("swarmd")  # cached by the SDK with the provider's own id generator
    tracing = Tracing(provider)
    consumers = set()
    yielded = 0
    for _ in range(200):
        with consume(tracing, None) as span:
            consumers.add(trace.get_current_span().get_span_context().trace_id)
            yielded += span is not None
    exported = len(exporter.get_finished_spans())
    assert yielded == exported  # a span is yielded exactly for the runs that are recorded
    assert 60 < exported < 140  # at the ratio: a trace id left over would decide every run alike
    other = provider.get_tracer("webapp").start_span("unrelated")
    other.end()
    assert other.get_span_context().trace_id not in consumers
    assert len(consumers) == 200


class _KeepAgent(Sampler):
    """A sampler that reads span attributes: swarmd must not decide for it."""

    def should_sample(  # type: ignore[override]
        self, parent_context: Any, trace_id: int, name: str, kind: Any = None, attributes: Any = None, links: Any = None
    ) -> SamplingResult:
        keep = bool(attributes) and attributes.get("swarmd.agent.name") == "keep"
        return SamplingResult(Decision.RECORD_AND_SAMPLE if keep else Decision.DROP, attributes if keep else None)

    def get_description(self) -> str:
        return "KeepAgent"


def test_a_sampler_that_reads_attributes_gets_them(exporter: InMemorySpanExporter) -> None:
    provider = TracerProvider(sampler=_KeepAgent())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider)
    with consume(tracing, None, agent="keep"):
        pass
    with consume(tracing, None, agent="drop"):
        pass
    assert [s.attributes["swarmd.agent.name"] for s in exporter.get_finished_spans() if s.attributes] == ["keep"]


def test_an_unsampled_parent_keeps_the_whole_run_unsampled(exporter: InMemorySpanExporter) -> None:
    provider = TracerProvider(sampler=ParentBasedTraceIdRatio(1.0))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider)
    unsampled = VALID_TP[:-2] + "00"
    with consume(tracing, unsampled) as span:
        assert span is None
        current = trace.get_current_span().get_span_context()
        assert current.trace_id == int(VALID_TP[3:35], 16) and not current.trace_flags.sampled
        with provider.get_tracer("handler").start_as_current_span("handler work") as child:
            assert not child.is_recording()
        with tracing.producer("default") as traceparent:  # a job the handler submits
            assert traceparent is not None and traceparent.startswith(f"00-{VALID_TP[3:35]}-")
            assert traceparent.endswith("-00")
    assert trace.get_current_span() is trace.INVALID_SPAN  # detached again
    with consume(tracing, VALID_TP) as span:  # the same parent, sampled: recorded
        assert span is not None
    [process] = exporter.get_finished_spans()
    assert process.parent is not None and process.parent.span_id == int(VALID_TP[36:52], 16)


def test_disabled_tracing_records_nothing_and_yields_none(exporter: InMemorySpanExporter) -> None:
    tracing = Tracing(None)
    assert not tracing.enabled
    with tracing.producer("default") as traceparent:
        assert traceparent is None
    with consume(tracing, VALID_TP) as span:
        assert span is None
        assert trace.get_current_span() is trace.INVALID_SPAN
        tracing.set_outcome(span, "failed", "ValueError")
        tracing.event(span, "x", {"a": 1})
    # One shared null context: no per-call object at all.
    assert tracing.producer("a") is tracing.consumer("b", job_id="j", gid="g", agent="a", attempt=1, traceparent=None)
    tracing.shutdown()
    assert exporter.get_finished_spans() == ()


def test_shutdown_flushes_and_disables(tracing: Tracing, exporter: InMemorySpanExporter) -> None:
    tracing.shutdown()
    tracing.shutdown()
    assert not tracing.enabled
    with tracing.producer("default") as traceparent:
        assert traceparent is None


# -- configuration from OTEL_* -------------------------------------------------------------


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"OTEL_TRACES_EXPORTER": "none"},
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"},
        {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"},
        {"OTEL_SDK_DISABLED": "TRUE", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"},
        {"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"},
    ],
)
def test_from_env_disabled(env: dict[str, str]) -> None:
    tracing = Tracing.from_env(env)
    assert not tracing.enabled
    assert tracing.provider is None


def test_from_env_console() -> None:
    tracing = Tracing.from_env({"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "svc"})
    try:
        assert tracing.enabled
        assert tracing.provider is not None
        assert tracing.provider.resource.attributes["service.name"] == "svc"
    finally:
        tracing.shutdown()


def test_from_env_default_service_name_and_sampler() -> None:
    tracing = Tracing.from_env(
        {
            "OTEL_TRACES_EXPORTER": "console",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.25",
        }
    )
    try:
        assert tracing.provider is not None
        assert tracing.provider.resource.attributes["service.name"] == "swarmd"
        sampler = tracing.provider.sampler
        assert isinstance(sampler, ParentBasedTraceIdRatio)
        assert "0.25" in sampler.get_description()  # type: ignore[no-untyped-call]
    finally:
        tracing.shutdown()


class _Receiver(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver that records the path and body of every POST."""

    received: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    received: list[tuple[str, bytes]] = []
    handler = type("Handler", (_Receiver,), {"received": received})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize(
    ("variables", "path"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "{base}/"}, "/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "{base}", "OTEL_TRACES_EXPORTER": "otlp"}, "/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "{base}/custom/path"}, "/custom/path"),
    ],
)
def test_from_env_otlp_exports_to_the_endpoint(
    receiver: tuple[str, list[tuple[str, bytes]]], variables: dict[str, str], path: str
) -> None:
    base, received = receiver
    env = {k: v.format(base=base) for k, v in variables.items()}
    env["OTEL_SERVICE_NAME"] = "otlp-test"
    tracing = Tracing.from_env(env)
    assert tracing.enabled
    with tracing.producer("default") as traceparent:
        assert traceparent is not None
    tracing.shutdown()  # flushes the batch processor synchronously
    [(got_path, body)] = received
    assert got_path == path
    trace_id = bytes.fromhex(traceparent[3:35])
    assert trace_id in body  # the protobuf carries the span's raw trace id
    assert b"otlp-test" in body and b"send default" in body


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_TRACES_EXPORTER": "console,zipkin"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER"),
        (
            {"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": "traceidratio",
             "OTEL_TRACES_SAMPLER_ARG": "2"},
            "OTEL_TRACES_SAMPLER_ARG",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": "traceidratio",
             "OTEL_TRACES_SAMPLER_ARG": "half"},
            "OTEL_TRACES_SAMPLER_ARG",
        ),
    ],
)  # fmt: skip
def test_from_env_refuses_unknown_values(env: dict[str, str], variable: str) -> None:
    with pytest.raises(TracingConfigError) as info:
        Tracing.from_env(env)
    assert isinstance(info.value, ValueError)
    assert info.value.variable == variable
    assert variable in str(info.value)


# -- parse_traceparent -----------------------------------------------------------------------


def test_parse_traceparent_valid() -> None:
    assert parse_traceparent(VALID_TP) == (
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
        1,
    )


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
        "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1",
        " 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\n",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        "00-0af7651916cd43dd8448eb211c80319\u0663-b7ad6b7169203331-01",
    ],
)
def test_parse_traceparent_malformed(bad: str) -> None:
    assert parse_traceparent(bad) is None


@given(st.text())
def test_parse_traceparent_never_raises(value: str) -> None:
    result = parse_traceparent(value)
    if result is not None:
        trace_id, span_id, flags = result
        assert f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}" == value


@given(st.integers(1, 2**128 - 1), st.integers(1, 2**64 - 1), st.integers(0, 255))
def test_parse_traceparent_round_trips(trace_id: int, span_id: int, flags: int) -> None:
    value = f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"
    assert parse_traceparent(value) == (trace_id, span_id, flags)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"OTEL_TRACES_EXPORTER": "otlp"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
    ],
)
def test_otlp_without_the_extra_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], variable: str
) -> None:
    # None in sys.modules makes the import fail as if the package were not installed.
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    with pytest.raises(TracingConfigError, match=rf"^{variable}=.*pip install 'swarmd\[otlp\]'"):
        Tracing.from_env(env)
