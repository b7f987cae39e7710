"""Each worker's registry, served on its unix socket as OpenMetrics text, comes out of the
supervisor's collector whole: every family once, every sample with ``worker`` added and its
value untouched (no histogram maths), exemplars and callback gauges included; a worker that
does not answer is left out of that scrape."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.parser import text_string_to_metric_families

from swarmd.runtime.worker_metrics import MetricsExporter, WorkersCollector
from swarmd.telemetry.metrics import Metrics


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """AF_UNIX paths are short (108 bytes): not under pytest's long tmp_path."""
    with tempfile.TemporaryDirectory(prefix="swarmd-wm-", dir="/tmp") as directory:
        yield Path(directory)


def _worker(n_jobs: int, exemplar: str) -> Metrics:
    metrics = Metrics(agents=["echo"], version="1.2.3", loop="uvloop")
    for _ in range(n_jobs):
        metrics.agent("echo").record("succeeded", 0.01)
    metrics.agent_duration.labels("echo", "succeeded").observe(0.2, exemplar={"trace_id": exemplar})
    metrics.job_started()  # one in flight: a callback gauge
    return metrics


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_every_series_of_every_worker_with_its_worker_label(short_dir: Path) -> None:
    workers = {"0": _worker(3, "aaa"), "1": _worker(5, "bbb")}
    exporters = [MetricsExporter(m.registry, short_dir / f"w{i}.sock") for i, m in workers.items()]
    for exporter in exporters:
        exporter.start()
    try:
        collector = WorkersCollector(lambda: {i: short_dir / f"w{i}.sock" for i in workers})
        supervisor = CollectorRegistry()
        supervisor.register(collector)
        merged = _samples(supervisor)
        assert collector.answered == 2
        expected = {
            (name, tuple(sorted({**dict(labels), "worker": index}.items()))): value
            for index, metrics in workers.items()
            for (name, labels), value in _samples(metrics.registry).items()
            if not name.startswith(("process_", "python_gc_"))  # these move between two reads
        }
        assert {key: merged[key] for key in expected} == expected
        assert {labels for (name, labels) in merged if name == "process_cpu_seconds_total"} == {
            (("worker", "0"),),
            (("worker", "1"),),
        }
        jobs = {dict(labels)["worker"]: v for (name, labels), v in merged.items()
                if name == "swarmd_jobs_total" and dict(labels)["outcome"] == "succeeded"}  # fmt: skip
        assert jobs == {"0": 3.0, "1": 5.0}
        assert merged[("swarmd_agents_in_flight", (("worker", "0"),))] == 1.0

        exemplars = openmetrics_latest(supervisor).decode()  # type: ignore[no-untyped-call]  # untyped upstream
        assert '# {trace_id="aaa"} 0.2' in exemplars and '# {trace_id="bbb"} 0.2' in exemplars
        assert exemplars.count("# TYPE swarmd_jobs counter") == 1  # one family, both workers

        exporters[1].stop()  # a worker gone: the other is still served
        assert {dict(labels)["worker"] for (name, labels) in _samples(supervisor) if name == "swarmd_ready"} == {"0"}
        assert collector.answered == 1
    finally:
        for exporter in exporters:
            exporter.stop()
