"""OpenTelemetry spans of a job's life, configured from the standard ``OTEL_*`` variables.

The producer opens a PRODUCER span ``send <queue>`` and stores the W3C ``traceparent`` it
yields in the job; the daemon opens one CONSUMER span ``process <queue>`` per run, a child
of that context and linked to it (the messaging semantic conventions)::

    tracing = Tracing.from_env()
    with tracing.producer("default") as traceparent:
        job = make_job(..., traceparent=traceparent)
    ...
    with tracing.consumer("default", job_id=j.id, gid=j.gid, agent=j.agent,
                          attempt=j.attempt, traceparent=j.traceparent) as span:
        outcome, error_type = await run(j)
        tracing.set_outcome(span, outcome, error_type)
    tracing.shutdown()                    # during drain: flushes the batch processor

Disabled tracing (no exporter configured, ``OTEL_TRACES_EXPORTER=none`` or
``OTEL_SDK_DISABLED=true``) returns one shared ``nullcontext`` from every per-job call: no
span object, no context switch, a method call and an ``is None`` test.

A swarm is one trace: a member without a ``traceparent`` runs under its swarm's span, whose ids
derive from the swarm id (:meth:`Tracing.swarm_parent`), and the daemon whose commit ends the
swarm emits that span (:meth:`Tracing.swarm_span`; see swarmd.telemetry.swarm_trace).

A dropped consumer span costs little more: the sampler is asked before the SDK builds anything
(how, and when that early decision is safe: docs/design/tracing.md). A run without a producer's
``traceparent`` (a root span) under a sampler whose root decision is a trace-id bound (the
ratio and fixed samplers, alone or as a ParentBased root) is decided by that bound directly,
with no sampler call and no parent context built: the same answer, about half the cost.

Variables read from the mapping given to :meth:`Tracing.from_env`: ``OTEL_SDK_DISABLED``,
``OTEL_TRACES_EXPORTER`` (comma-separated ``otlp``, ``console``, ``none``),
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, ``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_SERVICE_NAME``
(default ``swarmd``), ``OTEL_TRACES_SAMPLER`` and ``OTEL_TRACES_SAMPLER_ARG``. The SDK reads
the sampler variables from ``os.environ`` only (and ignores unknown values with a warning),
so this module builds the sampler itself, from the same mapping, and refuses unknown values.
The exporter's headers, timeout, compression and certificates, the batch processor's
``OTEL_BSP_*`` and ``OTEL_RESOURCE_ATTRIBUTES`` are read by the SDK from ``os.environ``.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_OFF,
    DEFAULT_ON,
    Decision,
    ParentBased,
    ParentBasedTraceIdRatio,
    Sampler,
    StaticSampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from swarmd.errors import TracingConfigError
from swarmd.telemetry.exemplars import context_exemplar
from swarmd.telemetry.swarm_trace import swarm_span_ids, swarm_traceparent

__all__ = ["Tracing", "TracingConfigError", "parse_traceparent"]

#: ``messaging.system`` of every swarmd span.
MESSAGING_SYSTEM: Final = "swarmd"
_PROPAGATOR: Final = TraceContextTextMapPropagator()
#: The name of a swarm's span (``swarm <queue>``) and what its sampling decision is asked for.
_SWARM: Final = "swarm"
_NULL: Final[nullcontext[None]] = nullcontext(None)
_TRACEPARENT_RE: Final = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_EXPORTERS: Final = ("otlp", "console", "none")
_FIXED_SAMPLERS: Final[Mapping[str, Sampler]] = {
    "always_on": ALWAYS_ON,
    "always_off": ALWAYS_OFF,
    "parentbased_always_on": DEFAULT_ON,
    "parentbased_always_off": DEFAULT_OFF,
}


def parse_traceparent(value: str) -> tuple[int, int, int] | None:
    """``(trace_id, span_id, flags)`` of a W3C version-00 ``traceparent``, else None.

    Valid means exactly ``00-<32 lowercase hex>-<16 lowercase hex>-<2 lowercase hex>`` with
    neither id all zeros. Never raises on any string.
    """
    match = _TRACEPARENT_RE.fullmatch(value)
    if match is None:
        return None
    trace_id = int(match[1], 16)
    span_id = int(match[2], 16)
    if trace_id == 0 or span_id == 0:
        return None
    return trace_id, span_id, int(match[3], 16)


class Tracing:
    """The daemon's tracer: per-job PRODUCER and CONSUMER spans, or nothing at all.

    ``Tracing(None)`` is disabled. ``Tracing(provider)`` uses ``provider`` (tests pass a
    ``TracerProvider`` with an in-memory exporter) and owns it: :meth:`shutdown` shuts it
    down. The global tracer provider is left alone unless :meth:`install_global` is called.
    """

    def __init__(self, provider: TracerProvider | None) -> None:
        self._provider = provider
        self._tracer: Tracer | None = None
        #: Set when runs may be sampled before the SDK builds a span (see the module docstring).
        self._ids: _PresetTraceIds | None = None
        #: The id generator the tracer uses, when it is ours: the swarm span's ids are set on it.
        self._generator: _PresetTraceIds | None = None
        #: The provider's own id generator, and the bound a root span's trace id (its low 64 bits)
        #: must be under to be sampled (None: ask the sampler).
        self._roots: tuple[IdGenerator, int] | None = None
        #: The flags of a dropped root span, drawn by the provider's generator.
        self._dropped_flags = TraceFlags(TraceFlags.DEFAULT)
        if provider is not None:
            current: IdGenerator = provider.id_generator
            # A second Tracing on one provider shares the wrapper the first installed.
            ids = current if isinstance(current, _PresetTraceIds) else _PresetTraceIds(current)
            if ids is not current:  # before get_tracer: a tracer keeps the generator it was made with
                provider.id_generator = ids  # type: ignore[assignment]  # typed as the SDK's default class
            self._sampler = provider.sampler
            self._tracer = provider.get_tracer("swarmd")
            # The SDK caches tracers by name: one made earlier may keep the old generator. And the
            # early decision needs a sampler whose answer depends on the trace id and the parent
            # only (what from_env builds); any other is left to the SDK, as it is given.
            if getattr(self._tracer, "id_generator", None) is ids:
                self._generator = ids
                if _decides_by_trace_id(self._sampler):
                    self._ids = ids
                    bound = _root_bound(self._sampler)
                    if bound is not None:
                        self._roots = (ids.inner, bound)
                    if ids.is_trace_id_random():
                        self._dropped_flags = TraceFlags(TraceFlags.DEFAULT | TraceFlags.RANDOM_TRACE_ID)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Tracing:
        """Build from the ``OTEL_*`` variables in ``environ`` (see the module docstring).

        Tracing is disabled when ``OTEL_SDK_DISABLED`` is ``true``, when
        ``OTEL_TRACES_EXPORTER`` is ``none``, or when it is unset and no OTLP endpoint
        variable is set. Raises TracingConfigError for an unknown exporter or sampler, a bad
        sampler argument, or ``otlp`` requested without the ``otlp`` extra installed.
        """
        if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return cls(None)
        raw = environ.get("OTEL_TRACES_EXPORTER", "").strip()
        traces_endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        base_endpoint = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        if raw:
            variable = "OTEL_TRACES_EXPORTER"
            names = [n.strip().lower() for n in raw.split(",") if n.strip()]
            unknown = [n for n in names if n not in _EXPORTERS]
            if unknown:
                raise TracingConfigError(
                    variable, raw, f"unknown exporter {unknown[0]!r}; expected otlp, console or none"
                )
        elif traces_endpoint or base_endpoint:
            variable = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" if traces_endpoint else "OTEL_EXPORTER_OTLP_ENDPOINT"
            names = ["otlp"]
        else:
            return cls(None)
        wanted = [n for n in dict.fromkeys(names) if n != "none"]
        if not wanted:
            return cls(None)

        exporters: list[SpanExporter] = []
        for name in wanted:
            if name == "console":
                # stderr: stdout carries the JSON log lines.
                exporters.append(ConsoleSpanExporter(out=sys.stderr))
            else:
                endpoint = traces_endpoint or (
                    f"{base_endpoint.removesuffix('/')}/v1/traces" if base_endpoint else None
                )
                exporters.append(_otlp_exporter(variable, environ.get(variable, ""), endpoint))
        provider = TracerProvider(resource=_resource(environ), sampler=_sampler(environ))
        for exporter in exporters:
            provider.add_span_processor(BatchSpanProcessor(exporter))
        return cls(provider)

    @property
    def enabled(self) -> bool:
        """True when spans are recorded and exported."""
        return self._tracer is not None

    @property
    def provider(self) -> TracerProvider | None:
        """The SDK provider, or None when disabled."""
        return self._provider

    def install_global(self) -> None:
        """Make this provider the process-wide one, so handlers' own spans are recorded.

        Handlers call ``opentelemetry.trace.get_tracer(...)``, which uses the global provider.
        The OpenTelemetry API allows this once per process: the daemon calls it at start-up,
        tests do not. A disabled ``Tracing`` leaves the global no-op provider in place.
        """
        if self._provider is not None:
            trace.set_tracer_provider(self._provider)

    # -- per job ------------------------------------------------------------------------

    def producer(self, queue: str, *, submitted_by: str | None = None) -> AbstractContextManager[str | None]:
        """A PRODUCER span ``send <queue>``; yields the ``traceparent`` to store in the job.

        Yields None when tracing is disabled. The span is current inside the block.
        ``submitted_by``: who the daemon's API socket takes this producer for (attribute
        ``swarmd.submitted_by``).
        """
        if self._tracer is None:
            return _NULL
        return self._producer(self._tracer, queue, submitted_by)

    def consumer(
        self,
        queue: str,
        *,
        job_id: str,
        gid: str,
        agent: str,
        attempt: int,
        traceparent: str | None,
    ) -> AbstractContextManager[Span | None]:
        """A CONSUMER span ``process <queue>`` for one run of a job; yields it, or None when
        tracing is disabled or the sampler dropped the run (see the module docstring).

        Its parent is the producer's context taken from ``traceparent``, and it carries a
        link to that context too; without a usable ``traceparent`` it starts a fresh trace
        (a malformed one adds the event ``swarmd.traceparent.malformed``, never raises). The
        span is current inside the block, so spans the handler opens are its children and
        log lines carry its ids. An exception escaping the block is recorded on the span.
        """
        tracer = self._tracer
        if tracer is None:
            return _NULL
        ids = self._ids
        roots = self._roots
        if not traceparent and roots is not None and ids is not None:  # a root span, decided by its trace id
            inner, bound = roots
            trace_id = inner.generate_trace_id()
            if trace_id & _TRACE_ID_LOW64 >= bound:  # dropped: the sampler would say so, and adds nothing
                context = SpanContext(trace_id, inner.generate_span_id(), False, self._dropped_flags)
                return _Unrecorded(NonRecordingSpan(context))
            return self._consumer(
                tracer,
                f"process {queue}",
                Context(),
                None,
                (ids, trace_id),
                job_id=job_id,
                gid=gid,
                agent=agent,
                attempt=attempt,
                queue=queue,
            )
        parent = Context()
        remote: SpanContext | None = None
        if traceparent:
            parent = _PROPAGATOR.extract({"traceparent": traceparent}, context=parent)
            remote = trace.get_current_span(parent).get_span_context()
        # What the SDK's start_span does first, without building a span: pick the trace id and
        # ask the sampler. Only a sampled run goes on to the SDK (with the same trace id).
        name = f"process {queue}"
        if ids is None:  # the SDK decides, with a span built either way
            return self._consumer(
                tracer, name, parent, remote, None, job_id=job_id, gid=gid, agent=agent, attempt=attempt, queue=queue
            )
        if remote is not None and remote.is_valid:
            trace_id, random_id, preset = remote.trace_id, remote.trace_flags.random_trace_id, None
        else:
            trace_id, random_id = ids.generate_trace_id(), ids.is_trace_id_random()
            preset = (ids, trace_id)
        decision = self._sampler.should_sample(parent, trace_id, name, SpanKind.CONSUMER)
        if decision.decision is not Decision.DROP:
            return self._consumer(
                tracer, name, parent, remote, preset, job_id=job_id, gid=gid, agent=agent, attempt=attempt, queue=queue
            )
        flags = TraceFlags.DEFAULT
        if random_id:
            flags |= TraceFlags.RANDOM_TRACE_ID
        context = SpanContext(
            trace_id,
            ids.generate_span_id(),
            is_remote=False,
            trace_flags=TraceFlags(flags),
            trace_state=decision.trace_state,
        )
        return _Unrecorded(NonRecordingSpan(context))

    # -- swarms (see swarmd.telemetry.swarm_trace) -----------------------------------------

    def swarm_parent(self, swarm_id: str) -> str | None:
        """The ``traceparent`` a member of swarm ``swarm_id`` without one of its own runs under:
        the swarm span, sampled as this daemon's sampler decides for the swarm's trace. None
        when tracing is disabled."""
        if self._tracer is None:
            return None
        trace_id, _ = swarm_span_ids(swarm_id)
        decision = self._sampler.should_sample(Context(), trace_id, _SWARM, SpanKind.INTERNAL).decision
        return swarm_traceparent(swarm_id, sampled=decision is not Decision.DROP)

    def swarm_exemplar(self, swarm_id: str, traceparent: str | None) -> dict[str, str] | None:
        """The exemplar of swarm ``swarm_id``'s span (see :meth:`swarm_span`; ``traceparent``: its
        members' own, if the producer traced them), or None when that span is not recorded."""
        if self._tracer is None:
            return None
        context = self._swarm_context(swarm_id, self._swarm_root(traceparent))
        return context_exemplar(context) if context is not None else None

    def swarm_span(
        self, queue: str, swarm_id: str, *, size: int, start: float, end: float, traceparent: str | None
    ) -> dict[str, str] | None:
        """Emit the span ``swarm <queue>`` of a swarm that has ended, from ``start`` (its enqueue
        time) to ``end`` (Unix times), with the ids its members named as their parent; return
        its exemplar, or None when tracing is off or the span is not sampled.

        ``traceparent``: the members' own (a tracing producer's ``send`` span), whose trace the
        swarm span then joins as that span's child; without one it is the root of its own trace.
        Call it once per swarm, from the commit that recorded its last outcome.
        """
        tracer, generator = self._tracer, self._generator
        if tracer is None or generator is None:
            return None
        parent = self._swarm_root(traceparent)
        if self._swarm_context(swarm_id, parent) is None:
            return None
        trace_id, span_id = swarm_span_ids(swarm_id)
        generator.preset(None if trace.get_current_span(parent).get_span_context().is_valid else trace_id)
        generator.preset_span(span_id)
        try:
            span = tracer.start_span(
                f"{_SWARM} {queue}",
                context=parent,
                kind=SpanKind.INTERNAL,
                start_time=int(start * 1e9),
                attributes={
                    "messaging.system": MESSAGING_SYSTEM,
                    "messaging.destination.name": queue,
                    "swarmd.swarm.id": swarm_id,
                    "swarmd.swarm.size": size,
                },
            )
        finally:
            generator.preset(None)
            generator.preset_span(None)
        span.end(end_time=int(max(end, start) * 1e9))
        context = span.get_span_context()
        return context_exemplar(context) if context.trace_flags.sampled else None

    @staticmethod
    def _swarm_root(traceparent: str | None) -> Context:
        """The parent of a swarm span: the producer's context, or none (a root span)."""
        if traceparent and parse_traceparent(traceparent) is not None:
            return _PROPAGATOR.extract({"traceparent": traceparent}, context=Context())
        return Context()

    def _swarm_context(self, swarm_id: str, parent: Context) -> SpanContext | None:
        """The context of swarm ``swarm_id``'s span under ``parent``, or None if it is dropped."""
        trace_id, span_id = swarm_span_ids(swarm_id)
        remote = trace.get_current_span(parent).get_span_context()
        if remote.is_valid:
            trace_id = remote.trace_id
        decision = self._sampler.should_sample(parent, trace_id, _SWARM, SpanKind.INTERNAL).decision
        if decision is not Decision.RECORD_AND_SAMPLE:
            return None
        return SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))

    @staticmethod
    def set_outcome(span: Span | None, outcome: str, error_type: str | None = None) -> None:
        """Record a run's outcome; with ``error_type`` also ``error.type`` and ERROR status."""
        if span is None:
            return
        span.set_attribute("swarmd.job.outcome", outcome)
        if error_type is not None:
            span.set_attribute("error.type", error_type)
            span.set_status(Status(StatusCode.ERROR, outcome))

    @staticmethod
    def event(span: Span | None, name: str, attrs: Mapping[str, AttributeValue] | None = None) -> None:
        """Add an event (identity violation, circuit transition, ...) to ``span``, if any."""
        if span is not None:
            span.add_event(name, attrs)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Export what is buffered (waiting at most ``timeout`` seconds), then shut down.

        Idempotent; tracing is disabled afterwards.
        """
        provider, self._provider, self._tracer = self._provider, None, None
        if provider is not None:
            provider.force_flush(int(timeout * 1000))
            provider.shutdown()

    # -- implementation -----------------------------------------------------------------

    @staticmethod
    @contextmanager
    def _producer(tracer: Tracer, queue: str, submitted_by: str | None = None) -> Iterator[str | None]:
        attributes = {
            "messaging.system": MESSAGING_SYSTEM,
            "messaging.operation.name": "send",
            "messaging.destination.name": queue,
        }
        if submitted_by is not None:
            attributes["swarmd.submitted_by"] = submitted_by
        span = tracer.start_span(f"send {queue}", kind=SpanKind.PRODUCER, attributes=attributes)
        with trace.use_span(span, end_on_exit=True):
            carrier: dict[str, str] = {}
            _PROPAGATOR.inject(carrier)
            yield carrier.get("traceparent")

    @staticmethod
    @contextmanager
    def _consumer(
        tracer: Tracer,
        name: str,
        parent: Context,
        remote: SpanContext | None,
        preset: tuple[_PresetTraceIds, int] | None,
        *,
        job_id: str,
        gid: str,
        agent: str,
        attempt: int,
        queue: str,
    ) -> Iterator[Span | None]:
        links = (Link(remote),) if remote is not None and remote.is_valid else ()
        if preset is not None:  # the root span's trace id was drawn and sampled already
            preset[0].preset(preset[1])
        try:
            # start_span + use_span is what start_as_current_span does, one generator fewer.
            span = tracer.start_span(
                name,
                context=parent,
                kind=SpanKind.CONSUMER,
                links=links,
                attributes={
                    "messaging.system": MESSAGING_SYSTEM,
                    "messaging.operation.name": "process",
                    "messaging.destination.name": queue,
                    "messaging.message.id": job_id,
                    "swarmd.agent.gid": gid,
                    "swarmd.agent.name": agent,
                    "swarmd.job.attempt": attempt,
                },
            )
        finally:
            if preset is not None:  # never left for another span to pick up
                preset[0].preset(None)
        if remote is not None and not remote.is_valid:
            span.add_event("swarmd.traceparent.malformed")
        with trace.use_span(span, end_on_exit=True):
            # A run the SDK's sampler dropped (the path for samplers swarmd does not ask itself)
            # yields None too: nothing to record on it.
            yield None if isinstance(span, NonRecordingSpan) else span


class _Unrecorded:
    """Makes a span the sampler dropped current for the block, and yields None: there is
    nothing to record on it, but handler spans, log lines and jobs submitted inside still see
    its trace (and its not-sampled flag)."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: NonRecordingSpan) -> None:
        self._span = span
        self._token: object = None

    def __enter__(self) -> None:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))

    def __exit__(self, *exc: object) -> None:
        otel_context.detach(self._token)  # type: ignore[arg-type]


class _PresetTraceIds(IdGenerator):
    """The provider's id generator, except that the next trace id drawn on this thread can be
    set beforehand: `Tracing.consumer` samples a root span on a trace id it drew itself, and
    the SDK must then build the span on that same id (it asks the sampler again)."""

    def __init__(self, inner: IdGenerator) -> None:
        self._inner = inner
        self._next = threading.local()

    @property
    def inner(self) -> IdGenerator:
        """The provider's own generator (what draws when nothing is preset)."""
        return self._inner

    def preset(self, trace_id: int | None) -> None:
        self._next.trace_id = trace_id

    def preset_span(self, span_id: int | None) -> None:
        """Set the next span id drawn on this thread (a swarm span's, derived from its id)."""
        self._next.span_id = span_id

    def generate_trace_id(self) -> int:
        preset: int | None = getattr(self._next, "trace_id", None)
        if preset is None:
            return self._inner.generate_trace_id()
        self._next.trace_id = None
        return preset

    def generate_span_id(self) -> int:
        preset: int | None = getattr(self._next, "span_id", None)
        if preset is None:
            return self._inner.generate_span_id()
        self._next.span_id = None
        return preset

    def is_trace_id_random(self) -> bool:
        return self._inner.is_trace_id_random()


def _decides_by_trace_id(sampler: Sampler) -> bool:
    """Whether ``sampler`` decides on the trace id and the parent alone, the same way every time
    it is asked: the fixed samplers, TraceIdRatioBased, and ParentBased over such samplers (all
    that `from_env` builds). Only then may `Tracing.consumer` ask it before the SDK does."""
    if isinstance(sampler, StaticSampler | TraceIdRatioBased):
        return True
    if type(sampler) in (ParentBased, ParentBasedTraceIdRatio):
        delegates = [getattr(sampler, name, None) for name in _PARENT_BASED_DELEGATES]
        return all(d is not None and _decides_by_trace_id(d) for d in delegates)
    return False


def _root_bound(sampler: Sampler) -> int | None:
    """The bound a root span's trace id (low 64 bits) must be under to be sampled, when the
    sampler's root decision is just that (TraceIdRatioBased, the fixed samplers, and ParentBased
    over them, whose root delegate decides a span without a parent); else None. Called only for
    a sampler `_decides_by_trace_id` accepts."""
    if isinstance(sampler, TraceIdRatioBased):
        return sampler.bound
    if isinstance(sampler, StaticSampler):
        return 0 if sampler is ALWAYS_OFF or getattr(sampler, "_decision", None) is Decision.DROP else 1 << 64
    if type(sampler) in (ParentBased, ParentBasedTraceIdRatio):
        root = getattr(sampler, "_root", None)
        return _root_bound(root) if isinstance(root, Sampler) else None
    return None


#: The bits of a trace id TraceIdRatioBased compares with its bound.
_TRACE_ID_LOW64: Final = TraceIdRatioBased.TRACE_ID_LIMIT


_PARENT_BASED_DELEGATES: Final = (
    "_root",
    "_remote_parent_sampled",
    "_remote_parent_not_sampled",
    "_local_parent_sampled",
    "_local_parent_not_sampled",
)


def _resource(environ: Mapping[str, str]) -> Resource:
    name = environ.get("OTEL_SERVICE_NAME", "").strip()
    resource = Resource.create({SERVICE_NAME: name} if name else {})
    current = str(resource.attributes.get(SERVICE_NAME, ""))
    if not current or current.startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "swarmd"}))
    return resource


def _sampler(environ: Mapping[str, str]) -> Sampler:
    raw = environ.get("OTEL_TRACES_SAMPLER", "").strip()
    name = raw.lower() or "parentbased_always_on"
    fixed = _FIXED_SAMPLERS.get(name)
    if fixed is not None:
        return fixed
    if name not in ("traceidratio", "parentbased_traceidratio"):
        known = ", ".join([*_FIXED_SAMPLERS, "traceidratio", "parentbased_traceidratio"])
        raise TracingConfigError("OTEL_TRACES_SAMPLER", raw, f"unknown sampler; expected {known}")
    arg = environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    try:
        rate = float(arg) if arg else 1.0
    except ValueError:
        rate = -1.0
    if not 0.0 <= rate <= 1.0:
        raise TracingConfigError("OTEL_TRACES_SAMPLER_ARG", arg, "expected a sampling ratio between 0.0 and 1.0")
    if name == "traceidratio":
        return TraceIdRatioBased(rate)
    return ParentBasedTraceIdRatio(rate)


def _otlp_exporter(variable: str, value: str, endpoint: str | None) -> SpanExporter:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,
        )
    except ImportError as exc:
        raise TracingConfigError(
            variable,
            value,
            "the OTLP exporter is not installed; install it with: pip install 'swarmd[otlp]'",
        ) from exc
    return OTLPSpanExporter(endpoint=endpoint)
