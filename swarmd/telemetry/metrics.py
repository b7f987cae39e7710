"""Prometheus metrics of the daemon: every ``swarmd_*`` series, built once, bound up front.

A :class:`Metrics` owns (or is given) a :class:`~prometheus_client.CollectorRegistry` and
registers every ``swarmd_*`` metric on it. Label values come from bounded sets only: agent
names from the agent registry (:meth:`Metrics.add_agent`), outcomes, queue states,
rejection reasons and circuit states from the tuples below, which are the values of the
vocabulary's enums (`swarmd.model`). A job id or a GID is never a label.

The per-job path uses pre-bound children, so it costs a dict lookup and a histogram
observation, never a ``labels()`` call::

    m = Metrics(agents=["echo"])
    am = m.agent("echo")                  # once per job (or cache it per agent)
    am.scheduling_overhead.observe(42e-6)
    m.job_started()
    ...
    m.job_finished()
    am.record("succeeded", 0.010)        # duration{outcome} + jobs_total{outcome}

Threading: the ``observe``/``inc``/``set`` calls of prometheus-client are thread-safe.
:meth:`Metrics.job_started` and :meth:`Metrics.job_finished` keep plain integers for speed
and must be called from one thread (the event loop); the scrape thread only reads them.

Of swarmd this module imports only the vocabulary (`swarmd.model`): telemetry sits below the
dispatcher.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterable, Mapping
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

from swarmd.model import ApiRefuseReason, CircuitState, JobState, Outcome, RejectReason, UpkeepStep

__all__ = [
    "API_REFUSE_REASONS",
    "CIRCUIT_STATES",
    "DURATION_BUCKETS",
    "LEDGER_COMMIT_BUCKETS",
    "LOOP_LAG_BUCKETS",
    "OUTCOMES",
    "OVERHEAD_BUCKETS",
    "QUEUE_STATES",
    "QUEUE_WAIT_BUCKETS",
    "REJECT_REASONS",
    "RETENTION_RESULTS",
    "STATE_PARTS",
    "UPKEEP_STEPS",
    "UPKEEP_STEP_BUCKETS",
    "AgentMetrics",
    "Metrics",
]

#: Every outcome a job run can end with (the ``outcome`` label).
OUTCOMES: Final = tuple(outcome.value for outcome in Outcome)
#: The states of ``swarmd_queue_jobs``: where a job waits in the queue (a done job is not in it).
QUEUE_STATES: Final = tuple(state.value for state in JobState if state not in (JobState.DONE, JobState.AWAITING))
#: Why a job was refused before it ran (``swarmd_rejected_jobs_total``).
REJECT_REASONS: Final = tuple(reason.value for reason in RejectReason)
#: Why the API socket refused a request (``swarmd_api_refused_total``).
API_REFUSE_REASONS: Final = tuple(reason.value for reason in ApiRefuseReason)
#: The parts of ``swarmd_state_bytes``: the SQLite file, its write-ahead log, archived ledger segments.
STATE_PARTS: Final = ("database", "wal", "archive")
#: How a retention pass ended (``swarmd_retention_runs_total``).
RETENTION_RESULTS: Final = ("ok", "failed")
#: Housekeeping steps of the state (``swarmd_state_upkeep_step_seconds{step}``).
UPKEEP_STEPS: Final = tuple(step.value for step in UpkeepStep)
#: Values of ``swarmd_circuit_state``, by circuit state.
CIRCUIT_STATES: Final[dict[str, int]] = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}

#: Scheduling and swarm overhead: 50 µs, 100 µs, 1 ms, 10 ms, 50 ms and 1 s are bounds.
OVERHEAD_BUCKETS: Final = (
    10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6,
    1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3,
    1.0, 2.5, 5.0,
)  # fmt: skip
#: Handler run time: from a no-op to a five-minute job.
DURATION_BUCKETS: Final = (
    100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip
#: Enqueued (or not_before) to handler start: a backlog can last an hour.
QUEUE_WAIT_BUCKETS: Final = (
    50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3,
    500e-3, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip
#: One group commit (an fsync or two).
LEDGER_COMMIT_BUCKETS: Final = (
    50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3,
    500e-3, 1.0, 2.5,
)  # fmt: skip
#: How late a periodic loop tick runs.
LOOP_LAG_BUCKETS: Final = (
    100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3,
    1.0, 2.5, 5.0,
)  # fmt: skip

#: How long one housekeeping step holds the backend: fine from 1 to 10 ms (5 ms, the target of
#: ``swarmd bench soak``, is a bound), coarse past it.
UPKEEP_STEP_BUCKETS: Final = (
    100e-6, 250e-6, 500e-6, 1e-3, 2e-3, 3e-3, 4e-3, 5e-3, 6e-3, 8e-3, 10e-3, 15e-3, 25e-3, 50e-3,
    100e-3, 250e-3, 500e-3, 1.0, 2.5,
)  # fmt: skip


class AgentMetrics:
    """The pre-bound series of one registered agent (see :meth:`Metrics.agent`).

    ``duration`` and ``jobs`` are keyed by outcome (a member of :data:`OUTCOMES`, or a
    ``StrEnum`` member with the same value). Use the children directly on the hot path.
    """

    __slots__ = (
        "circuit_state",
        "duration",
        "event_loop_stalls",
        "identity_violations",
        "jobs",
        "name",
        "queue_wait",
        "scheduling_overhead",
    )

    def __init__(self, metrics: Metrics, name: str) -> None:
        self.name = name
        self.scheduling_overhead: Histogram = metrics.scheduling_overhead.labels(name)
        self.queue_wait: Histogram = metrics.queue_wait.labels(name)
        self.duration: dict[str, Histogram] = {o: metrics.agent_duration.labels(name, o) for o in OUTCOMES}
        self.jobs: dict[str, Counter] = {o: metrics.jobs.labels(name, o) for o in OUTCOMES}
        self.identity_violations: Counter = metrics.identity_violations.labels(name)
        self.event_loop_stalls: Counter = metrics.event_loop_stalls.labels(name)
        self.circuit_state: Gauge = metrics.circuit_state.labels(name)  # labels(): exists at 0

    def record(self, outcome: str, seconds: float, exemplar: dict[str, str] | None = None) -> None:
        """Count one run that ended with ``outcome`` after ``seconds`` of handler time;
        ``exemplar``: its span's ids, for a sampled run (see swarmd.telemetry.exemplars).

        Raises KeyError for an outcome outside :data:`OUTCOMES`.
        """
        self.duration[outcome].observe(seconds, exemplar)
        self.jobs[outcome].inc()

    def set_circuit(self, state: str) -> None:
        """Set the circuit state: a `CircuitState` (or its value, ``closed``, ``half_open``, ``open``)."""
        self.circuit_state.set(CIRCUIT_STATES[state])


class Metrics:
    """Every ``swarmd_*`` metric, registered on one registry.

    With ``registry=None`` a fresh :class:`CollectorRegistry` is made and the default
    process, platform and GC collectors of prometheus-client are registered on it; a caller
    that passes its own registry chooses its own collectors. Constructing a ``Metrics``
    turns ``_created`` series off process-wide (:func:`prometheus_client.disable_created_metrics`).

    ``agents`` are the agents registered now; :meth:`add_agent` adds one registered later.
    ``version`` and ``loop`` (``"asyncio"`` or ``"uvloop"``) label ``swarmd_build_info``.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        agents: Iterable[str] = (),
        version: str = "0",
        loop: str = "asyncio",
    ) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream
        if registry is None:
            registry = _default_registry()
        self.registry: Final = registry
        r = registry

        self.scheduling_overhead: Final = Histogram(
            "swarmd_scheduling_overhead_seconds",
            "Time from a job being reserved to its handler starting.",
            ["agent"], buckets=OVERHEAD_BUCKETS, registry=r,
        )  # fmt: skip
        self.swarm_overhead: Final = Histogram(
            "swarmd_swarm_overhead_seconds",
            "Per swarm: first job reserved to last job done, minus the longest agent duration.",
            buckets=OVERHEAD_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_wait: Final = Histogram(
            "swarmd_queue_wait_seconds",
            "Time from a job being enqueued (or its not_before) to its handler starting.",
            ["agent"], buckets=QUEUE_WAIT_BUCKETS, registry=r,
        )  # fmt: skip
        self.agent_duration: Final = Histogram(
            "swarmd_agent_duration_seconds",
            "Handler run time, by outcome.",
            ["agent", "outcome"], buckets=DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.jobs: Final = Counter(
            "swarmd_jobs",
            "Ends of job attempts (succeeded, failed, timed_out, cancelled) and what became of the job "
            "after a failed one (retried, dead_lettered); succeeded + dead_lettered + cancelled = finished jobs.",
            ["agent", "outcome"],
            registry=r,
        )
        self.agents_in_flight: Final = Gauge("swarmd_agents_in_flight", "Handlers running now.", registry=r)
        self.concurrent_peak: Final = Gauge(
            "swarmd_concurrent_peak", "Highest number of handlers in flight since start.",
            registry=r,
        )  # fmt: skip
        self._limit: int | None = None
        self.concurrency_limit: Final = Gauge(
            "swarmd_concurrency_limit", "The concurrency limit in force now.", registry=r
        )
        self.event_loop_stalls: Final = Counter(
            "swarmd_event_loop_stalls",
            "Times a handler held the event loop past the stall threshold, by its agent.",
            ["agent"],
            registry=r,
        )
        self.identity_violations: Final = Counter(
            "swarmd_identity_violations",
            "Jobs that broke the identity check: a result naming another GID, or the GID rebound.",
            ["agent"],
            registry=r,
        )
        self.ledger_index: Final = Gauge("swarmd_ledger_index", "Index of the last committed ledger entry.", registry=r)
        self.ledger_commit: Final = Histogram(
            "swarmd_ledger_commit_seconds", "Duration of one group commit of ledger entries.",
            buckets=LEDGER_COMMIT_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_jobs: Final = Gauge("swarmd_queue_jobs", "Jobs in the queue, by state.", ["state"], registry=r)
        self.jobs_unroutable: Final = Gauge(
            "swarmd_jobs_unroutable",
            "Queued jobs of agents a daemon once served but this one does not load: kept, not run here.",
            registry=r,
        )
        self.event_loop_lag: Final = Histogram(
            "swarmd_event_loop_lag_seconds", "How late a periodic event-loop tick runs.",
            buckets=LOOP_LAG_BUCKETS, registry=r,
        )  # fmt: skip
        self.build_info: Final = Gauge(
            "swarmd_build_info", "Always 1; the labels describe the running build.",
            ["version", "python", "loop"], registry=r,
        )  # fmt: skip
        self.circuit_state: Final = Gauge(
            "swarmd_circuit_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            ["agent"], registry=r,
        )  # fmt: skip
        self.ready: Final = Gauge("swarmd_ready", "1 when the daemon reports ready, else 0.", registry=r)
        self.rejected_jobs: Final = Counter(
            "swarmd_rejected_jobs", "Jobs refused before they ran, by reason.", ["reason"],
            registry=r,
        )  # fmt: skip

        self.abandoned_tasks: Final = Gauge(
            "swarmd_abandoned_tasks",
            "Job tasks whose handler ignored its cancellation: their attempt is recorded and their slot "
            "free, but the task still runs (never awaited at shutdown).",
            registry=r,
        )
        self.stray_task_errors: Final = Counter(
            "swarmd_stray_task_errors",
            "Exceptions raised by tasks nobody awaits (a handler's leftover tasks, mostly), survived and logged.",
            registry=r,
        )
        self.api_refused: Final = Counter(
            "swarmd_api_refused", "Requests the API socket refused, by reason.", ["reason"],
            registry=r,
        )  # fmt: skip
        self._api_refused_children: Final = {reason: self.api_refused.labels(reason) for reason in API_REFUSE_REASONS}

        # -- bounded state: refreshed by the daemon's retention loop, read as cached values
        self.state_bytes: Final = Gauge(
            "swarmd_state_bytes",
            "Bytes of the daemon's state on disk, by part: database (the SQLite file), wal (its "
            "write-ahead log), archive (archived ledger segments).",
            ["part"], registry=r,
        )  # fmt: skip
        self._state_children: Final = {part: self.state_bytes.labels(part) for part in STATE_PARTS}
        self.state_filesystem_free_bytes: Final = Gauge(
            "swarmd_state_filesystem_free_bytes",
            "Bytes free (for the daemon's user) on the file system of the state directory.",
            registry=r,
        )
        self.ledger_entries: Final = Gauge(
            "swarmd_ledger_entries", "Entries in the live ledger store (archived ones not counted).", registry=r
        )
        self.ledger_oldest_timestamp: Final = Gauge(
            "swarmd_ledger_oldest_timestamp_seconds",
            "When the job of the oldest live ledger entry finished (Unix time); 0 while the ledger is empty.",
            registry=r,
        )
        self.retention_runs: Final = Counter(
            "swarmd_retention_runs",
            "Passes of retention (finished jobs' keys forgotten after result_ttl; ledger retention), by result.",
            ["result"], registry=r,
        )  # fmt: skip
        self._retention_children: Final = {result: self.retention_runs.labels(result) for result in RETENTION_RESULTS}
        self.retention_last_run: Final = Gauge(
            "swarmd_retention_last_run_timestamp_seconds",
            "When a retention pass last ended without error (Unix time); 0: none since the daemon started.",
            registry=r,
        )
        self.state_upkeep_step: Final = Histogram(
            "swarmd_state_upkeep_step_seconds",
            "How long one housekeeping step held the state backend, by step: on SQLite the time it held "
            "the backend's one thread once it had the write lock (the hot path's commits wait behind it; "
            "wal_checkpoint: its time on a thread of its own), on Redis its script's round trip (the "
            "server runs nothing else meanwhile).",
            ["step"], buckets=UPKEEP_STEP_BUCKETS, registry=r,
        )  # fmt: skip
        self._upkeep_children: Final = {step: self.state_upkeep_step.labels(step) for step in UPKEEP_STEPS}
        self.finished_expired: Final = Counter(
            "swarmd_finished_expired",
            "Idempotency keys (and, on Redis, finished swarms' member sets) forgotten after result_ttl.",
            registry=r,
        )

        self.build_info.labels(version, platform.python_version(), loop).set(1)
        self._queue_children: Final = {s: self.queue_jobs.labels(s) for s in QUEUE_STATES}
        for child in self._queue_children.values():
            child.set(0)
        self._reject_children: Final = {reason: self.rejected_jobs.labels(reason) for reason in REJECT_REASONS}
        self._in_flight = 0
        self._peak = 0
        self.agents_in_flight.set_function(lambda: self._in_flight)
        self.concurrent_peak.set_function(lambda: self._peak)
        self._agents: dict[str, AgentMetrics] = {}
        for name in agents:
            self.add_agent(name)

        # -- schedules (swarmd.runtime.scheduler): a series per schedule, set once it is known --
        self.schedule_last_tick: Final = Gauge(
            "swarmd_schedule_last_tick_timestamp_seconds",
            "Unix time of the last tick of each schedule this daemon fired (or found fired).",
            ["schedule"], registry=r,
        )  # fmt: skip
        self.schedule_next_tick: Final = Gauge(
            "swarmd_schedule_next_tick_timestamp_seconds",
            "Unix time of the next tick each schedule is due to fire; in the past: the tick is late.",
            ["schedule"], registry=r,
        )  # fmt: skip

    # -- agents ---------------------------------------------------------------------------

    def add_agent(self, name: str) -> AgentMetrics:
        """Create the series of a newly registered agent (all at 0); idempotent."""
        found = self._agents.get(name)
        if found is None:
            found = self._agents[name] = AgentMetrics(self, name)
        return found

    def agent(self, name: str) -> AgentMetrics:
        """The pre-bound series of a registered agent.

        Raises KeyError for a name never passed to ``agents=`` or :meth:`add_agent`, and
        creates no series: an unknown agent name must never become a label value. The
        daemon checks its agent registry before it gets here.
        """
        return self._agents[name]

    @property
    def agent_names(self) -> tuple[str, ...]:
        """The agents that have series, in registration order."""
        return tuple(self._agents)

    # -- concurrency ----------------------------------------------------------------------

    def job_started(self) -> None:
        """One more handler in flight; raises the peak if it is a new high.

        Event-loop thread only (plain integers, read by the scrape thread).
        """
        n = self._in_flight + 1
        self._in_flight = n
        if n > self._peak:  # noqa: PLR1730 - cheaper than a call to max() per job
            self._peak = n

    def job_finished(self) -> None:
        """One handler fewer in flight. Event-loop thread only."""
        self._in_flight -= 1

    @property
    def in_flight(self) -> int:
        """Handlers in flight now (the value of ``swarmd_agents_in_flight``)."""
        return self._in_flight

    @property
    def peak(self) -> int:
        """Highest in-flight count since start (``swarmd_concurrent_peak``)."""
        return self._peak

    def set_concurrency_limit(self, n: int) -> None:
        """Publish the concurrency limit in force now (called per job: the gauge's lock is only
        taken when the value changes)."""
        if n != self._limit:
            self._limit = n
            self.concurrency_limit.set(n)

    # -- ledger, queue, loop --------------------------------------------------------------

    def set_ledger_index(self, index: int) -> None:
        """Publish the index of the last committed ledger entry."""
        self.ledger_index.set(index)

    def observe_ledger_commit(self, seconds: float) -> None:
        """Record the duration of one group commit."""
        self.ledger_commit.observe(seconds)

    def set_queue_depths(self, depths: Mapping[str, int]) -> None:
        """Publish a snapshot of the queue: ``{"ready": n, "delayed": n, ...}``.

        The mapping is a whole snapshot: a state it leaves out is set to 0. A state outside
        :data:`QUEUE_STATES` raises ValueError and changes nothing. The values are cached in
        the gauges, so a scrape reads them without touching the event loop.
        """
        unknown = set(depths).difference(self._queue_children)
        if unknown:
            raise ValueError(f"unknown queue state(s) {sorted(unknown)!r}; expected {list(QUEUE_STATES)!r}")
        for state, child in self._queue_children.items():
            child.set(depths.get(state, 0))

    def count_stall(self, agent: str | None) -> None:
        """Count one stall of the event loop for the agent whose handler held it. A stall with
        no handler on the loop's stack (None) is not counted here: the loop-lag histogram and
        the stall's log line show it. Called from the stall watcher's thread, which
        prometheus_client's counters allow."""
        if agent is not None and agent in self._agents:
            self._agents[agent].event_loop_stalls.inc()

    def observe_loop_lag(self, seconds: float) -> None:
        """Record how late a periodic event-loop tick ran."""
        self.event_loop_lag.observe(seconds)

    def observe_swarm_overhead(self, seconds: float, exemplar: dict[str, str] | None = None) -> None:
        """Record one swarm's overhead (wall time minus its longest agent's duration);
        ``exemplar``: the ids of its swarm span, when that is sampled."""
        self.swarm_overhead.observe(seconds, exemplar)

    # -- daemon state ---------------------------------------------------------------------

    def set_ready(self, ready: bool) -> None:
        """Publish readiness (``swarmd_ready`` 1 or 0)."""
        self.ready.set(1 if ready else 0)

    def reject(self, reason: str) -> None:
        """Count one job refused before it ran; ``reason`` is one of :data:`REJECT_REASONS`."""
        try:
            child = self._reject_children[reason]
        except KeyError:
            raise ValueError(f"unknown rejection reason {reason!r}; expected one of {list(REJECT_REASONS)!r}") from None
        child.inc()

    def refuse_api(self, reason: str) -> None:
        """Count one request the API socket refused; ``reason`` is one of :data:`API_REFUSE_REASONS`."""
        try:
            child = self._api_refused_children[reason]
        except KeyError:
            raise ValueError(
                f"unknown refusal reason {reason!r}; expected one of {list(API_REFUSE_REASONS)!r}"
            ) from None
        child.inc()

    # -- schedules -------------------------------------------------------------------------

    def set_schedule_ticks(self, schedule: str, *, last: float | None, next_tick: float) -> None:
        """Publish a schedule's last tick fired (None: none yet, no series) and its next tick.
        ``schedule`` is a configured schedule's name (bounded: it comes from the config)."""
        if last is not None:
            self.schedule_last_tick.labels(schedule).set(last)
        self.schedule_next_tick.labels(schedule).set(next_tick)

    # -- bounded state (README "Running for a long time") ---------------------------------

    def set_state_bytes(self, sizes: Mapping[str, int], free: int) -> None:
        """Sizes in bytes by part of :data:`STATE_PARTS` (a missing part reads 0), and the bytes
        free on the state directory's file system."""
        for part, child in self._state_children.items():
            child.set(sizes.get(part, 0))
        self.state_filesystem_free_bytes.set(free)

    def set_ledger_extent(self, entries: int, oldest_finished_at: float | None) -> None:
        """How many entries the live ledger holds, and when its oldest one's job finished."""
        self.ledger_entries.set(entries)
        self.ledger_oldest_timestamp.set(0.0 if oldest_finished_at is None else oldest_finished_at)

    def observe_upkeep_step(self, step: str, seconds: float) -> None:
        """One housekeeping step (a member of :data:`UPKEEP_STEPS`) held the backend ``seconds``;
        thread-safe (the SQLite backend calls it on its own thread). Raises KeyError for a step
        outside :data:`UPKEEP_STEPS`."""
        self._upkeep_children[step].observe(seconds)

    def retention_ran(self, ok: bool, now: float | None = None) -> None:
        """One retention pass ended: ``ok`` (the last-run time moves) or failed. Called by every
        retention loop (finished-job expiry; ledger retention), so `SwarmdRetentionStalled`
        sees any of them stop."""
        self._retention_children["ok" if ok else "failed"].inc()
        if ok:
            self.retention_last_run.set(time.time() if now is None else now)


def _default_registry() -> CollectorRegistry:
    """A fresh registry with prometheus-client's default process, platform and GC metrics."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry
