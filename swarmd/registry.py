"""Agents: named async handlers, registered with `@agent("name")`.

A handler is ``async def handler(ctx: JobContext, payload) -> result``. The registry is the
only source of agent names: the daemon refuses jobs for names it does not hold, and metrics
label values come from it alone.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import re
import stat
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

from swarmd.builtin_agents import register_builtins
from swarmd.errors import ConfigError, UnknownAgentError, WorkflowError
from swarmd.handles import Submitted
from swarmd.model import AGENT_PATTERN, Job, SwarmPlan
from swarmd.results import JobResult
from swarmd.schedules import CatchUp, Schedule

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
    #: The schedule `@agent(..., schedule=...)` declared (named after the agent), if any.
    schedule: Schedule | None = None


class Workflow(Protocol):
    """What the daemon lends a handler's context for ``ctx.submit`` (swarmd.runtime.spawning)."""

    def spawn(
        self,
        ctx: JobContext,
        specs: Sequence[Mapping[str, Any]],
        *,
        swarm: bool,
        fail_fast: bool,
        then: Mapping[str, Any] | None,
        then_when: str,
    ) -> Submitted: ...

    async def swarm_results(self, swarm_id: str) -> list[JobResult]: ...


@dataclass(slots=True)
class JobContext:
    """What a handler gets besides its payload."""

    job: Job
    #: A structlog logger bound with job_id, gid and agent.
    log: Any
    #: The daemon's side of ``submit`` (None: a context no daemon runs, where submit refuses).
    workflow: Workflow | None = None
    #: What this run submitted so far (written when its outcome commits, if it succeeds).
    children: list[Job] | None = None
    plans: list[SwarmPlan] | None = None
    #: Positions taken by submits so far: children's ids are derived from the job's id and these.
    positions: int = 0
    #: Set once the handler has returned: a submit then has no commit to join.
    closed: bool = False

    @property
    def gid(self) -> str:
        return self.job.gid

    @property
    def attempt(self) -> int:
        return self.job.attempt

    @property
    def parent_id(self) -> str | None:
        """The job whose handler submitted this one (None: a producer's job)."""
        return self.job.parent_id

    @property
    def follows(self) -> str | None:
        """The swarm this job is the follow-up of (None: not a follow-up)."""
        return self.job.follows

    def submit(self, agent: str, *, gid: str, payload: Any = None, **options: Any) -> str:
        """Submit a child job: written with this job's outcome, in the same commit, if and only
        if this attempt succeeds. Returns the child's id at once (the same on every attempt).
        Options as for `swarmd.AsyncClient.submit`, except ``job_id`` and ``idempotency_key``."""
        return self.submit_many([{"agent": agent, "gid": gid, "payload": payload, **options}])[0]

    def submit_many(
        self,
        specs: Sequence[Mapping[str, Any]],
        *,
        swarm: bool = False,
        fail_fast: bool = False,
        then: Mapping[str, Any] | None = None,
        then_when: str = "always",
    ) -> Submitted:
        """Submit child jobs (``swarm=True``: as one swarm, with an optional follow-up ``then``,
        a job spec run when the swarm's last member has ended; ``then_when``: "always" or
        "all_succeeded"). Written with this job's outcome if this attempt succeeds."""
        if self.workflow is None:
            raise WorkflowError("ctx.submit works only in a handler the daemon runs (this context has no daemon)")
        if self.closed:
            raise WorkflowError(
                f"ctx.submit after the handler of job {self.job.id} returned: its outcome is committed without it"
            )
        return self.workflow.spawn(self, specs, swarm=swarm, fail_fast=fail_fast, then=then, then_when=then_when)

    async def swarm_results(self) -> list[JobResult]:
        """The outcomes of the members of the swarm this job follows up, in ledger order."""
        if self.job.follows is None:
            raise WorkflowError(f"job {self.job.id} is not the follow-up of a swarm")
        if self.workflow is None:
            raise WorkflowError("ctx.swarm_results works only in a handler the daemon runs")
        return await self.workflow.swarm_results(self.job.follows)


class Registry:
    """Agent names to handlers."""

    def __init__(self) -> None:
        self._agents: dict[str, AgentSpec] = {}

    def register(
        self, name: str, handler: Handler, policy: AgentPolicy | None = None, schedule: Schedule | None = None
    ) -> None:
        if not isinstance(name, str) or not _AGENT_RE.match(name):
            raise ValueError(f"agent name {name!r} does not match {AGENT_PATTERN}")
        if not inspect.iscoroutinefunction(handler):
            raise TypeError(f"agent {name!r}: handler must be an async function")
        existing = self._agents.get(name)
        if existing is not None and existing.handler is not handler:
            raise ValueError(f"agent {name!r} is already registered")
        self._agents[name] = AgentSpec(name, handler, policy or AgentPolicy(), schedule)

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

    def schedules(self) -> list[Schedule]:
        """The schedules agents declared with `@agent(..., schedule=...)`, by name."""
        return sorted((spec.schedule for spec in self if spec.schedule is not None), key=lambda s: s.name)

    def update(self, other: Registry) -> None:
        for spec in other:
            self.register(spec.name, spec.handler, spec.policy, spec.schedule)


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
    schedule: str | None = None,
    gid: str | None = None,
    payload: Any = None,
    timezone: str = "UTC",
    catch_up: CatchUp | str = CatchUp.LATEST,
) -> Callable[[H], H]:
    """Register an async handler under ``name``::

    @agent("summarize", max_attempts=5, timeout=30)
    async def summarize(ctx: JobContext, payload: dict) -> dict: ...

    ``schedule`` (a cron expression; see swarmd.schedules) has the daemon submit a job for this
    agent at each tick, as ``gid``, with ``payload``; the schedule is named after the agent (a
    ``[[schedule]]`` table of the config with that name replaces it). A bad expression, time zone
    or a missing ``gid`` raises ConfigError when the module is imported.
    """
    where = f"@agent({name!r})"
    if schedule is None and gid is not None:
        raise ConfigError(f"{where}.gid", "a gid is for a schedule: give schedule= too")
    if schedule is not None and gid is None:
        raise ConfigError(f"{where}.gid", "missing: a schedule needs the gid its jobs speak for")
    scheduled = (
        Schedule.checked(
            name=name,
            agent=name,
            gid=gid or "",
            cron=schedule,
            payload=payload,
            timezone=timezone,
            catch_up=catch_up,
            where=where,
        )
        if schedule is not None
        else None
    )
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
        (registry or default_registry).register(name, handler, policy, scheduled)
        return handler

    return register


#: Directory permission bits that let a group or others write a directory: modules found in
#: such a directory could have been put there by someone else, so it is never searched.
_SHARED_WRITE: Final = stat.S_IWGRP | stat.S_IWOTH


@dataclass(frozen=True, slots=True)
class SearchPath:
    """Where agent modules are looked for before ``sys.path``: the ``agents_path`` directories,
    then the working directory when it may be trusted; ``skipped`` says which directory was
    left out and why, for the error that names a module found nowhere."""

    directories: tuple[Path, ...]
    skipped: tuple[tuple[Path, str], ...] = ()

    def describe(self) -> str:
        """The search, in words, for an error message."""
        searched = ", ".join(str(directory) for directory in self.directories)
        text = f"searched {searched + ', then ' if searched else ''}sys.path"
        for directory, reason in self.skipped:
            text += f"; skipped the working directory {directory}: {reason}"
        if self.skipped:
            text += " (name a directory only you can write to in agents_path: --agents-path, SWARMD_AGENTS_PATH)"
        return text


def _untrusted_reason(directory: Path, state_dir: Path | None) -> str | None:
    """Why the working directory ``directory`` must not be searched for agent modules, or None.

    Refused: the state directory or a directory inside it (the systemd unit's
    ``WorkingDirectory``: what the daemon writes there is not code), a directory a group or
    others may write to, and one owned by a user other than this one or root (its owner could
    put a module there). Root's directories are trusted: root can change any file anyway.
    """
    if state_dir is not None:
        try:
            state = state_dir.resolve()
        except OSError:
            state = state_dir
        if directory == state or state in directory.parents:
            return "it is the state directory" if directory == state else f"it is inside the state directory {state}"
    try:
        info = directory.stat()
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if info.st_mode & _SHARED_WRITE:
        return f"it is writable by group or others (mode {stat.S_IMODE(info.st_mode):04o})"
    if info.st_uid not in (os.geteuid(), 0):
        return f"it is owned by another user (uid {info.st_uid}, not {os.geteuid()})"
    return None


def agent_search_path(
    agents_path: Sequence[str | Path] = (),
    *,
    state_dir: Path | None = None,
    cwd: Path | None = None,
    key: str = "agents_path",
) -> SearchPath:
    """The directories to search for agent modules before ``sys.path``, in order.

    First every ``agents_path`` directory (the operator named them: searched as given, relative
    ones from the working directory, ``~`` expanded; one that is not a directory is a
    ConfigError), then the working directory, as ``uvicorn --app-dir`` does by default, so that
    ``swarmd serve --agents myagents`` finds ``./myagents.py`` -- unless the working directory
    is the state directory or not this user's alone (see `_untrusted_reason`), in which case it
    is skipped and the reason kept for the error message.
    """
    if cwd is None:
        try:
            cwd = Path.cwd()
        except OSError:  # the working directory was removed: nothing to search there
            cwd = None
    directories: list[Path] = []
    for entry in agents_path:
        directory = Path(entry).expanduser()
        if not directory.is_absolute() and cwd is not None:
            directory = cwd / directory
        if not directory.is_dir():
            raise ConfigError(key, f"{entry} is not a directory")
        directories.append(directory.resolve())
    skipped: list[tuple[Path, str]] = []
    if cwd is not None:
        cwd = cwd.resolve()
        reason = _untrusted_reason(cwd, state_dir)
        if reason is not None:
            skipped.append((cwd, reason))
        elif cwd not in directories:
            directories.append(cwd)
    return SearchPath(tuple(directories), tuple(skipped))


def _not_found(exc: ImportError, module: str) -> bool:
    """True when ``exc`` says ``module`` itself (or a package on its dotted path) does not
    exist, rather than that something the module imports is missing."""
    return (
        isinstance(exc, ModuleNotFoundError)
        and exc.name is not None
        and (module == exc.name or module.startswith(exc.name + "."))
    )


def load_agent_modules(modules: list[str], key: str = "agents", search: SearchPath | None = None) -> None:
    """Import the modules the config names, so their `@agent` decorators run.

    ``search`` (see `agent_search_path`) lists directories tried before ``sys.path``. They are
    put at the front of ``sys.path`` for the imports only and taken out again afterwards: a
    module (or package) imported from them keeps working, since its ``__file__`` and
    ``__path__`` are absolute, and its top-level imports of modules beside it work as they do
    in a script, but the working directory does not stay on ``sys.path`` for the daemon's life,
    where any later import of a name could be shadowed by a file in it. (importlib's
    ``PathFinder`` with an explicit path would find the module alone, but then a module beside
    it that it imports would not be found: a surprise for the ``myagents.py`` of a README.)
    """
    search = search or SearchPath(())
    added = [str(directory) for directory in search.directories]
    sys.path[:0] = added
    importlib.invalidate_caches()  # a module written since the directory was last listed
    try:
        for module in modules:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                if _not_found(exc, module):
                    raise ConfigError(
                        key, f"cannot import agent module {module!r}: not found ({search.describe()})"
                    ) from exc
                raise ConfigError(key, f"cannot import agent module {module!r}: {exc}") from exc
            except Exception as exc:
                raise ConfigError(key, f"cannot import agent module {module!r}: {exc}") from exc
    finally:
        for entry in added:  # ours are first; an equal entry that was there before stays
            with contextlib.suppress(ValueError):
                sys.path.remove(entry)


def build_registry(
    agent_modules: Sequence[str],
    *,
    agents_path: Sequence[str | Path] = (),
    state_dir: Path | None = None,
) -> Registry:
    """The agents a daemon serves: the built-ins, then every `@agent` of ``agent_modules``
    (the config's ``agents``), looked for in ``agents_path``, then in the working directory
    unless it is ``state_dir`` or not this user's alone, then on ``sys.path`` (see
    `agent_search_path`). The daemon runs them; the CLI refuses a submit naming another."""
    search = agent_search_path(agents_path, state_dir=state_dir)  # a bad agents_path is an error even unused
    load_agent_modules(list(agent_modules), search=search)
    registry = Registry()
    register_builtins(registry)
    registry.update(default_registry)
    return registry
