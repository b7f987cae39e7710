"""The daemon's ``/metrics`` answers in the format the scraper's ``Accept`` header asks for:
OpenMetrics, with the exemplars of sampled jobs, for a scraper that asks for it (Prometheus
with exemplar storage); the plain text format, without exemplars, for any other. Both formats
expose the same series: exemplars add none.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families as text_families

from swarmd.runtime.httpserver import HttpServer
from swarmd.telemetry.metrics import Metrics

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
#: What Prometheus sends when it may use OpenMetrics (its default scrape protocols).
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
EXEMPLAR = {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"}


@pytest.fixture
def server() -> Iterator[HttpServer]:
    metrics = Metrics(agents=("echo",))
    agent = metrics.agent("echo")
    agent.scheduling_overhead.observe(120e-6, EXEMPLAR)  # a sampled job
    agent.scheduling_overhead.observe(30e-6)  # an unsampled one
    agent.record("succeeded", 0.003, EXEMPLAR)
    metrics.observe_swarm_overhead(0.002, EXEMPLAR)
    with HttpServer("127.0.0.1", 0, metrics.registry, health=lambda: (True, ""), ready=lambda: (True, "")) as srv:
        yield srv


def get(server: HttpServer, accept: str | None) -> tuple[str, str]:
    """(Content-Type, body) of ``/metrics`` asked with ``accept``."""
    request = urllib.request.Request(f"http://{server.address}/metrics")
    if accept is not None:
        request.add_header("Accept", accept)
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.headers["Content-Type"], response.read().decode()


def series(families: object) -> set[tuple[str, frozenset[tuple[str, str]]]]:
    """Every sample's name and labels (``_total`` and the like as the text format names them)."""
    return {(sample.name, frozenset(sample.labels.items())) for family in families for sample in family.samples}  # type: ignore[attr-defined]


def test_a_scraper_that_asks_for_openmetrics_gets_the_exemplars(server: HttpServer) -> None:
    content_type, body = get(server, PROMETHEUS_ACCEPT)
    assert content_type.startswith(OPENMETRICS)
    # The strict OpenMetrics parser of prometheus-client: a malformed exemplar raises.
    found = {
        (family.name, sample.labels.get("le")): sample.exemplar
        for family in openmetrics_families(body)  # type: ignore[no-untyped-call]
        for sample in family.samples
        if sample.exemplar is not None
    }
    assert {name: exemplar.labels for (name, _), exemplar in found.items()} == {
        "swarmd_scheduling_overhead_seconds": EXEMPLAR,
        "swarmd_agent_duration_seconds": EXEMPLAR,
        "swarmd_swarm_overhead_seconds": EXEMPLAR,
    }
    # Each in the bucket of its observation, the unsampled one's bucket left without one.
    assert found["swarmd_scheduling_overhead_seconds", "0.00025"].value == pytest.approx(120e-6)
    assert ("swarmd_scheduling_overhead_seconds", "5e-05") not in found


@pytest.mark.parametrize("accept", [None, "text/plain", "*/*"], ids=["no Accept", "text/plain", "anything"])
def test_any_other_scraper_gets_the_text_format_without_exemplars(server: HttpServer, accept: str | None) -> None:
    content_type, body = get(server, accept)
    assert content_type.startswith("text/plain; version=0.0.4")
    assert "trace_id" not in body and "# EOF" not in body


def test_both_formats_expose_the_same_series(server: HttpServer) -> None:
    _, text = get(server, None)
    _, openmetrics = get(server, OPENMETRICS)
    assert series(text_families(text)) == series(openmetrics_families(openmetrics))  # type: ignore[no-untyped-call]
