"""An in-process worker on a real SQLite file, and what its tests ask of it.

`worker` runs a `Worker` on a `SqliteBackend` in a state directory until the block ends (then
stops it with no grace); `until` waits for an async condition with a deadline, never a sleep.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry

from swarmd.builtin_agents import register_builtins
from swarmd.config import Settings
from swarmd.model import Job, new_job
from swarmd.queue.sqlite.backend import SqliteBackend
from swarmd.registry import AgentPolicy, Handler, Registry
from swarmd.runtime.worker import Worker
from swarmd.telemetry.metrics import Metrics
from swarmd.telemetry.tracing import Tracing

#: A lease long enough that it never expires during a test.
LEASE = 30.0


def job(agent: str = "echo", **fields: Any) -> Job:
    """A job for ``agent`` in one test swarm; ``fields`` as `new_job` takes them."""
    return new_job(agent=agent, gid="GID-r", **fields)


@asynccontextmanager
async def worker(
    state: Path, handlers: dict[str, tuple[Handler, AgentPolicy]] | None = None, **settings: Any
) -> AsyncIterator[tuple[SqliteBackend, Worker]]:
    """A running worker (built-in agents plus ``handlers``) on the queue in ``state``; fast retries."""
    backend = SqliteBackend(state)
    await backend.open()
    await backend.listen()
    registry = Registry()
    register_builtins(registry)
    for name, (handler, policy) in (handlers or {}).items():
        registry.register(name, handler, policy)
    w = Worker(
        backend,
        registry,
        Settings(**{"poll_interval": 0.05, "backoff_base": 0.01, "backoff_cap": 0.01, **settings}),
        Metrics(CollectorRegistry(), agents=registry.names()),
        Tracing(None),
    )
    task = asyncio.get_running_loop().create_task(w.run())
    try:
        yield backend, w
    finally:
        w.stop(0)
        w.stop()
        await asyncio.wait_for(task, 10)
        await backend.close()


async def ledger(backend: SqliteBackend) -> list[dict[str, Any]]:
    """Every ledger entry so far, decoded."""
    return [msgspec.json.decode(entry.record) for entry in await backend.ledger_entries()]


async def until(predicate: Any, timeout: float = 10.0) -> None:
    """Wait until the async ``predicate`` answers true; fail after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.01)


async def has_entries(backend: SqliteBackend) -> bool:
    """Whether the ledger holds anything yet (an `until` predicate)."""
    return bool(await backend.ledger_entries())
