"""The worker rides out a queue that goes away between two of its calls (found by the Redis
kill test of issue 9: a Redis killed just after an empty reserve took the daemon down, since
the idle wait's `next_due` raised `BackendUnavailable` outside any handler)."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from pathlib import Path
from typing import Any, cast

from swarmd.builtin_agents import register_builtins
from swarmd.config import Settings
from swarmd.errors import BackendUnavailable
from swarmd.model import new_job
from swarmd.queue.base import QueueBackend, Reserved, WakeReason
from swarmd.queue.sqlite.backend import SqliteBackend
from swarmd.registry import Registry
from swarmd.runtime.worker import Health, Worker
from swarmd.telemetry.metrics import Metrics
from swarmd.telemetry.tracing import Tracing


class Unavailable:
    """A SQLite backend whose `next_due` and `cancel_requested` fail ``failures`` times each;
    the waits for work after the first ``failures`` report a cancel request (so the idle wait
    asks for them) ``failures`` times."""

    def __init__(self, inner: SqliteBackend, failures: int) -> None:
        self.inner = inner
        self.left = {"next_due": failures, "cancel_requested": failures}
        self.failures = failures
        self.waits = 0
        self.health: Health | None = None
        #: What the worker's readiness said at each reserve (it clears it once a call succeeds).
        self.reported: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _fail(self, what: str) -> None:
        if self.left[what] > 0:
            self.left[what] -= 1
            raise BackendUnavailable(f"Redis at test unavailable ({what}): ConnectionError: refused")

    async def reserve(self, limit: int, *, lease: float, exclude_agents: Collection[str] = ()) -> list[Reserved]:
        if self.health is not None and self.health.backend_error is not None:
            self.reported.add(self.health.backend_error)
        return await self.inner.reserve(limit, lease=lease, exclude_agents=exclude_agents)

    async def next_due(self) -> float | None:
        self._fail("next_due")
        return await self.inner.next_due()

    async def cancel_requested(self) -> list[str]:
        self._fail("cancel_requested")
        return await self.inner.cancel_requested()

    async def wait_for_work(self, timeout: float) -> set[WakeReason]:
        self.waits += 1
        if self.failures < self.waits <= 2 * self.failures:
            return {WakeReason.CANCEL}
        return await self.inner.wait_for_work(timeout)


async def test_the_worker_keeps_running_when_the_queue_fails_between_calls(tmp_path: Path) -> None:
    inner = SqliteBackend(tmp_path)
    await inner.open()
    try:
        await inner.submit([new_job(agent="echo", gid=f"GID-{i}") for i in range(20)])
        backend = Unavailable(inner, failures=3)
        registry = Registry()
        register_builtins(registry)
        settings = Settings(poll_interval=0.01)
        worker = Worker(
            cast(QueueBackend, backend), registry, settings, Metrics(agents=registry.names()), Tracing(None)
        )
        run = asyncio.get_running_loop().create_task(worker.run())
        backend.health = worker.health
        async with asyncio.timeout(20):
            while any(backend.left.values()) or (await inner.verify()).entries < 20 or worker.health.backend_error:
                assert not run.done(), run.exception()
                await asyncio.sleep(0.005)
        worker.stop()
        await run
        assert {error.split("(")[1].split(")")[0] for error in backend.reported} == {"next_due", "cancel_requested"}
        assert (await inner.counts())["ready"] == 0
    finally:
        await inner.close()
