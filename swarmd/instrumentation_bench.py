"""The `instrumentation` bench: one in-process worker draining no-op jobs from SQLite, with

- ``none``: no-op metrics, tracing off, logs filtered at error;
- ``default``: Prometheus metrics, tracing off (no exporter), logs at info;
- ``sampled``: metrics, logs at info, and spans exported (batched) to an in-memory exporter,
  one job in ten sampled (``traceidratio`` 0.1, a usual production setting);
- ``full``: the same with every job sampled.
"""

from __future__ import annotations

import asyncio
import io
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import uvloop
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

from swarmd.builtin_agents import register_builtins
from swarmd.config import Settings
from swarmd.logs import configure_logging
from swarmd.metrics import Metrics
from swarmd.model import new_job
from swarmd.registry import Registry
from swarmd.sqlite_queue import SqliteBackend
from swarmd.tracing import Tracing
from swarmd.worker import Worker


class _Noop:
    """Accepts any call and attribute and does nothing: telemetry switched off."""

    def __getattr__(self, name: str) -> Any:
        return self

    def __getitem__(self, key: Any) -> Any:
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self


async def _drain(state: Path, jobs: int, mode: str) -> float:
    backend = SqliteBackend(state)
    await backend.open()
    try:
        for start in range(0, jobs, 5000):
            await backend.submit([new_job(agent="echo", gid=f"GID-{i}") for i in range(start, min(jobs, start + 5000))])
        registry = Registry()
        register_builtins(registry)
        metrics = cast(Metrics, _Noop()) if mode == "none" else Metrics(agents=registry.names())
        exporter = InMemorySpanExporter()
        tracing = Tracing(None)
        if mode in ("sampled", "full"):
            provider = TracerProvider(sampler=TraceIdRatioBased(0.1 if mode == "sampled" else 1.0))
            provider.add_span_processor(BatchSpanProcessor(exporter))
            tracing = Tracing(provider)
        configure_logging("error" if mode == "none" else "info", json=True, stream=io.StringIO())
        worker = Worker(backend, registry, Settings(), metrics, tracing, burst=True)
        started = time.perf_counter()
        await worker.run()
        elapsed = time.perf_counter() - started
        tracing.shutdown()
        spans = len(exporter.get_finished_spans())
        if mode == "full" and spans != jobs:
            raise RuntimeError(f"expected {jobs} spans, exported {spans}")
        if mode == "sampled" and not 0 < spans < jobs:
            raise RuntimeError(f"expected about {jobs // 10} sampled spans, exported {spans}")
        report = await backend.verify()
        if report.entries != jobs:
            raise RuntimeError(f"expected {jobs} ledger entries, found {report.entries}")
        return jobs / elapsed
    finally:
        await backend.close()
        configure_logging("info")


def drain(jobs: int, mode: str) -> float:
    """Jobs per second of one in-process drain in ``mode`` (none, default, sampled, full)."""
    with (
        tempfile.TemporaryDirectory(prefix="swarmd-bench-") as tmp,
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
    ):
        return runner.run(_drain(Path(tmp), jobs, mode))
