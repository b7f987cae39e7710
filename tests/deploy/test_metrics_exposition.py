"""promtool check metrics: the exposition of swarmd's metrics is one Prometheus accepts without a word.

promtool is found with :func:`require_tool`: without it the test skips, and under
``SWARMD_TEST_STRICT=1`` it fails.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable

import prometheus_client
from prometheus_client.core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.registry import Collector
from support.services import require_tool

from swarmd.runtime.worker_metrics import relabel
from swarmd.telemetry.metrics import Metrics
from swarmd.telemetry.supervisor_metrics import SupervisorMetrics

AGENTS = ("echo", "sleep")


def test_promtool_check_metrics_is_silent() -> None:
    promtool = require_tool("promtool")
    m = Metrics(agents=AGENTS, version="1.2.3", loop="uvloop")
    am = m.agent("sleep")
    am.scheduling_overhead.observe(1e-4)
    am.record("timed_out", 2.0)
    m.set_queue_depths({"ready": 1})
    exposition = prometheus_client.generate_latest(m.registry)
    proc = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")


def test_promtool_check_metrics_is_silent_with_exemplars_recorded() -> None:
    """Observations of sampled jobs carry exemplars: the text format (what promtool and any
    scraper that does not ask for OpenMetrics get) leaves them out and stays clean."""
    promtool = require_tool("promtool")
    m = Metrics(agents=AGENTS)
    exemplar = {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"}
    m.agent("echo").scheduling_overhead.observe(1e-4, exemplar)
    m.agent("echo").queue_wait.observe(2e-3, exemplar)
    m.agent("echo").record("succeeded", 0.5, exemplar)
    m.observe_swarm_overhead(1e-3, exemplar)
    exposition = prometheus_client.generate_latest(m.registry)
    assert b"trace_id" not in exposition
    proc = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")


def test_promtool_check_metrics_is_silent_on_a_supervisors_exposition() -> None:
    """With workers > 1: the supervisor's own metrics and its workers' series, each labelled
    ``worker``, as its /metrics serves them (swarmd.runtime.worker_metrics)."""
    promtool = require_tool("promtool")
    texts = []
    for worker in ("0", "1"):
        m = Metrics(agents=AGENTS, version="1.2.3", loop="uvloop")
        m.agent("echo").record("succeeded", 0.01)
        texts.append((worker, openmetrics_latest(m.registry).decode()))  # type: ignore[no-untyped-call]
    supervisor = SupervisorMetrics(2, running=lambda: 2)
    families = relabel(texts)

    class Workers(Collector):
        def collect(self) -> Iterable[Metric]:
            return families

    supervisor.registry.register(Workers())
    exposition = prometheus_client.generate_latest(supervisor.registry)
    assert b'swarmd_jobs_total{agent="echo",outcome="succeeded",worker="1"} 1.0' in exposition
    proc = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")
