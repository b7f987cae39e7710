"""Admission: may a job of this agent start now, and what happens after it ends?

One place holds the per-agent policy state of a running daemon: the circuit breaker, the
per-agent concurrency limit, the token bucket and the retry policy, resolved from (highest
first) the job, the ``[agent.NAME]`` config table, the agent's ``@agent(...)`` declaration
and the daemon's defaults. The worker asks `blocked_agents` before reserving (so work that
cannot start is not taken at all) and a job it holds waits for its agent's turn (`AgentGate.wait_turn`) before it runs.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from swarmd.config import AgentSettings, Settings
from swarmd.errors import ConfigError, Permanent
from swarmd.policies.backoff import RetryPolicy
from swarmd.policies.breaker import CircuitBreaker, CircuitState
from swarmd.policies.ratelimit import TokenBucket
from swarmd.registry import AgentSpec, Registry
from swarmd.telemetry.metrics import Metrics

log = structlog.get_logger("swarmd.admission")


def _load_exception(spec: str, key: str) -> type[BaseException]:
    module_name, _, name = spec.partition(":")
    try:
        value = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(key, f"cannot load exception {spec!r}: {exc}") from None
    if not (isinstance(value, type) and issubclass(value, BaseException)):
        raise ConfigError(key, f"{spec!r} is not an exception type")
    return value


@dataclass(slots=True)
class AgentGate:
    """The live policy state of one agent."""

    spec: AgentSpec
    retry: RetryPolicy
    timeout: float
    permanent: tuple[type[BaseException], ...]
    breaker: CircuitBreaker
    concurrency: int | None
    bucket: TokenBucket | None
    running: int = 0
    slots: asyncio.Semaphore | None = None
    transitions: list[tuple[CircuitState, CircuitState]] = field(default_factory=list)

    def is_permanent(self, exc: BaseException) -> bool:
        return isinstance(exc, (Permanent, *self.permanent))

    async def wait_turn(self) -> None:
        """Wait for one of the agent's own slots (its concurrency limit) and a token of its
        rate, in that order. Cancelled while waiting, it holds no slot; the caller releases
        the slot it got (``slots.release()``) once the job ends."""
        if self.slots is not None:
            await self.slots.acquire()
        try:
            # Tokens refill with time, not with an event: sleeping until the next one is the wait.
            while self.bucket is not None and not self.bucket.try_take():  # noqa: ASYNC110
                await asyncio.sleep(self.bucket.wait_time())
        except BaseException:
            if self.slots is not None:
                self.slots.release()
            raise


class Admission:
    """Per-agent gates for every registered agent."""

    def __init__(
        self,
        registry: Registry,
        settings: Settings,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics
        self.clock = clock
        self.gates: dict[str, AgentGate] = {}
        #: What the last `blocked_agents` excluded (the puller's idle wait is about these).
        self._blocked: list[str] = []
        #: Agents a daemon once served (published) that this one does not load: their jobs are
        #: kept in the queue, for a daemon that loads them (a fixed restart, another host).
        self.served_elsewhere: frozenset[str] = frozenset()
        #: Those of them whose jobs this daemon met: excluded from its reservations.
        self.unroutable: set[str] = set()
        for spec in registry:
            self.gates[spec.name] = self._gate(spec, settings, settings.agent.get(spec.name, AgentSettings()))

    def _gate(self, spec: AgentSpec, settings: Settings, overrides: AgentSettings) -> AgentGate:
        declared = spec.policy
        key = f"agent.{spec.name}"
        base = overrides.backoff_base or declared.backoff_base or settings.backoff_base
        cap = overrides.backoff_cap or declared.backoff_cap or settings.backoff_cap
        retry = RetryPolicy(
            max_attempts=overrides.max_attempts or declared.max_attempts or settings.max_attempts,
            base=base,
            cap=max(cap, base),
        )
        permanent = declared.permanent + tuple(
            _load_exception(name, f"{key}.permanent") for name in overrides.permanent
        )
        concurrency = overrides.concurrency or declared.concurrency
        rate = overrides.rate or declared.rate
        burst = overrides.burst or declared.burst or (max(1, int(rate)) if rate else None)
        agent_metrics = self.metrics.agent(spec.name)

        def on_transition(old: CircuitState, new: CircuitState, name: str = spec.name) -> None:
            agent_metrics.set_circuit(new)
            gate = self.gates.get(name)
            if gate is not None:
                gate.transitions.append((old, new))
            log.warning("circuit_transition", agent=name, old=old, new=new)

        breaker = CircuitBreaker(
            failure_threshold=settings.breaker_failures,
            failure_ratio=settings.breaker_ratio,
            window=settings.breaker_window,
            cooldown=settings.breaker_cooldown,
            clock=self.clock,
            on_transition=on_transition,
        )
        return AgentGate(
            spec=spec,
            retry=retry,
            timeout=overrides.timeout or declared.timeout or settings.default_timeout,
            permanent=permanent,
            breaker=breaker,
            concurrency=concurrency,
            bucket=TokenBucket(rate, burst or 1, clock=self.clock) if rate else None,
            slots=asyncio.Semaphore(concurrency) if concurrency else None,
        )

    def blocked_agents(self) -> list[str]:
        """Agents none of whose jobs could start now: breaker open, at their limit, out of tokens,
        or not loaded here at all (unroutable)."""
        blocked = sorted(self.unroutable)
        for name, gate in self.gates.items():
            if (
                gate.breaker.state is CircuitState.OPEN
                or (gate.concurrency is not None and gate.running >= gate.concurrency)
                or (gate.bucket is not None and gate.bucket.wait_time() > 0)
            ):
                blocked.append(name)
        self._blocked = blocked
        return blocked

    def holds(self, now: float) -> dict[str, str]:
        """Why the ready jobs of some agents do not start here (agent -> reason), for operators:
        an open circuit (with the wall-clock time of its next trial, ``now`` being wall-clock
        now), or an agent this daemon does not load."""
        held = dict.fromkeys(self.unroutable, "waiting for a daemon that loads this agent")
        for name, gate in self.gates.items():
            if gate.breaker.state is CircuitState.OPEN:
                trial = time.strftime("%H:%M:%S", time.gmtime(now + gate.breaker.retry_after()))
                held[name] = f"circuit open (the agent keeps failing): next trial at {trial} UTC"
        return held

    def soonest_unblock(self) -> float | None:
        """Seconds until a blocked agent might be admitted again (breaker cooldown, tokens).

        0 for an agent the last `blocked_agents` excluded whose breaker has half-opened or whose
        tokens have refilled since: its jobs may start now. One still at its concurrency limit
        waits for a freed slot instead (`waiting_for_slot`), not for a time.
        """
        waits = []
        for name, gate in self.gates.items():
            if gate.concurrency is not None and gate.running >= gate.concurrency:
                continue
            wait = max(gate.breaker.retry_after(), gate.bucket.wait_time() if gate.bucket is not None else 0.0)
            if wait > 0 or name in self._blocked:
                waits.append(wait)
        return min(waits) if waits else None

    def waiting_for_slot(self) -> bool:
        """Whether an agent the last `blocked_agents` excluded is at its own concurrency limit (a
        job of it that ends frees work to reserve)."""
        return any(
            (gate := self.gates[name]).concurrency is not None and gate.running >= gate.concurrency
            for name in self._blocked
            if name in self.gates
        )
