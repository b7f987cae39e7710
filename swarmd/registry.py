"""Agents: named async handlers, registered with `@agent("name")`.

A handler is ``async def handler(ctx: JobContext, payload) -> result``. The registry is the
only source of agent names: the daemon refuses jobs for names it does not hold, and metrics
label values come from it alone.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from swarmd.builtin_agents import register_builtins
from swarmd.errors import ConfigError, UnknownAgentError
from swarmd.model import AGENT_PATTERN, Job

Handler = Callable[["JobContext", Any], Awaitable[Any]]
H = TypeVar("H", bound=Handler)

_AGENT_RE: Final = re.compile(AGENT_PATTERN)


@dataclass(frozen=True, slots=True)
class AgentPolicy:
    """Per-agent defaults; None means: use the daemon's configured default."""

    max_attempts: int | None = None
    timeout: float | None = None
    backoff_base: float | None = None
    backoff_cap: float | None = None
    #: Exception types that fail a job at once, without retry (besides swarmd.Permanent).
    permanent: tuple[type[BaseException], ...] = ()
    #: At most this many jobs of this agent run at once (None: no per-agent limit).
    concurrency: int | None = None
    #: Token-bucket rate limit: jobs started per second, and the burst allowed.
    rate: float | None = None
    burst: int | None = None


@dataclass(frozen=True, slots=True)
class AgentSpec:
    name: str
    handler: Handler
    policy: AgentPolicy = field(default_factory=AgentPolicy)


@dataclass(slots=True)
class JobContext:
    """What a handler gets besides its payload."""

    job: Job
    #: A structlog logger bound with job_id, gid and agent.
    log: Any

    @property
    def gid(self) -> str:
        return self.job.gid

    @property
    def attempt(self) -> int:
        return self.job.attempt


class Registry:
    """Agent names to handlers."""

    def __init__(self) -> None:
        self._agents: dict[str, AgentSpec] = {}

    def register(self, name: str, handler: Handler, policy: AgentPolicy | None = None) -> None:
        if not isinstance(name, str) or not _AGENT_RE.match(name):
            raise ValueError(f"agent name {name!r} does not match {AGENT_PATTERN}")
        if not inspect.iscoroutinefunction(handler):
            raise TypeError(f"agent {name!r}: handler must be an async function")
        existing = self._agents.get(name)
        if existing is not None and existing.handler is not handler:
            raise ValueError(f"agent {name!r} is already registered")
        self._agents[name] = AgentSpec(name, handler, policy or AgentPolicy())

    def get(self, name: str) -> AgentSpec:
        try:
            return self._agents[name]
        except KeyError:
            raise UnknownAgentError(name, list(self._agents)) from None

    def __contains__(self, name: object) -> bool:
        return name in self._agents

    def __iter__(self) -> Iterator[AgentSpec]:
        return iter(self._agents.values())

    def names(self) -> list[str]:
        return sorted(self._agents)

    def update(self, other: Registry) -> None:
        for spec in other:
            self.register(spec.name, spec.handler, spec.policy)


#: Where `@agent` registers by default; the daemon loads it after importing agent modules.
default_registry: Final = Registry()


def agent(
    name: str,
    *,
    registry: Registry | None = None,
    max_attempts: int | None = None,
    timeout: float | None = None,
    backoff_base: float | None = None,
    backoff_cap: float | None = None,
    permanent: tuple[type[BaseException], ...] = (),
    concurrency: int | None = None,
    rate: float | None = None,
    burst: int | None = None,
) -> Callable[[H], H]:
    """Register an async handler under ``name``::

    @agent("summarize", max_attempts=5, timeout=30)
    async def summarize(ctx: JobContext, payload: dict) -> dict: ...
    """
    policy = AgentPolicy(
        max_attempts=max_attempts,
        timeout=timeout,
        backoff_base=backoff_base,
        backoff_cap=backoff_cap,
        permanent=permanent,
        concurrency=concurrency,
        rate=rate,
        burst=burst,
    )

    def register(handler: H) -> H:
        (registry or default_registry).register(name, handler, policy)
        return handler

    return register


def load_agent_modules(modules: list[str], key: str = "agents") -> None:
    """Import the modules the config names, so their `@agent` decorators run."""
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise ConfigError(key, f"cannot import agent module {module!r}: {exc}") from exc


def build_registry(agent_modules: Sequence[str]) -> Registry:
    """The agents a daemon serves: the built-ins, then every `@agent` of ``agent_modules``
    (the config's ``agents``). The daemon runs them; the CLI refuses a submit naming another."""
    load_agent_modules(list(agent_modules))
    registry = Registry()
    register_builtins(registry)
    registry.update(default_registry)
    return registry
