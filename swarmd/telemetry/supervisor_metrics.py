"""The supervisor's own metrics (``workers`` > 1); the workers' series are re-exposed beside
them by swarmd.runtime.worker_metrics, each labelled ``worker``.

The supervisor registers no process collector: its ``process_*`` families would collide with
the workers' (which carry ``worker``); it does little but wait, and its CPU shows in systemd's
accounting of the unit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics


class SupervisorMetrics:
    """``swarmd_worker_restarts_total{worker}`` and ``swarmd_workers_running``."""

    def __init__(self, workers: int, running: Callable[[], int], registry: CollectorRegistry | None = None) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # as swarmd.telemetry.metrics does
        self.registry: Final = registry if registry is not None else CollectorRegistry()
        self.worker_restarts: Final = Counter(
            "swarmd_worker_restarts",
            "Worker processes the supervisor restarted after they died (crashed, killed, or exited unasked).",
            ["worker"],
            registry=self.registry,
        )
        for index in range(workers):  # every slot's series exists from the start, at 0
            self.worker_restarts.labels(str(index))
        self.workers_running: Final = Gauge(
            "swarmd_workers_running", "Worker processes alive now (workers > 1 only).", registry=self.registry
        )
        self.workers_running.set_function(lambda: float(running()))

    def restarted(self, index: int) -> None:
        self.worker_restarts.labels(str(index)).inc()
