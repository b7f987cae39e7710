"""grafana/: the dashboard JSON and the provisioning files.

Checks what makes the dashboard portable and correct: a fixed uid, the data source and
the instance/agent filters as variables used by every query, a unit on every panel, the five
rows, queries that name only series the daemon exports or the shipped recording rules
define, and PromQL that Prometheus itself parses (promtool, skipped without it unless
``SWARMD_TEST_STRICT=1``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.promql import (
    RECORDING_RULES,
    ROOT,
    load_yaml,
    metric_names,
    promtool,
    recording_rule_names,
    unknown_names,
)

DASHBOARD = ROOT / "grafana" / "dashboards" / "swarmd.json"
PROVISIONING = ROOT / "grafana" / "provisioning"
DS_UID = "${datasource}"
ROWS = ["Overview", "Latency", "Queue and ledger", "Runtime", "Schedules", "State"]
#: The histograms whose observations of sampled jobs carry exemplars (issue 21).
EXEMPLAR_HISTOGRAMS = (
    "swarmd_scheduling_overhead_seconds",
    "swarmd_swarm_overhead_seconds",
    "swarmd_queue_wait_seconds",
    "swarmd_agent_duration_seconds",
)
#: Series with an `agent` label: a query on them must honour the agent variable.
AGENT_LABELLED = (
    "swarmd_scheduling_overhead_seconds",
    "swarmd_queue_wait_seconds",
    "swarmd_agent_duration_seconds",
    "swarmd_jobs_total",
    "swarmd_identity_violations_total",
    "swarmd_circuit_state",
    "instance_agent",
)


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every non-row panel, including those inside collapsed rows."""
    out = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            out.extend(panel.get("panels", []))
        else:
            out.append(panel)
    return out


def targets(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [target for panel in panels(dashboard) for target in panel["targets"]]


def rows(dashboard: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Row title -> the panels laid out under it (by position; rows are not collapsed)."""
    layout = sorted(dashboard["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))
    result: dict[str, list[dict[str, Any]]] = {}
    current: list[dict[str, Any]] | None = None
    for panel in layout:
        if panel["type"] == "row":
            current = result.setdefault(panel["title"], [])
            current.extend(panel.get("panels", []))
        else:
            assert current is not None, f"panel {panel['title']!r} above the first row"
            current.append(panel)
    return result


def exprs_of(panel_list: list[dict[str, Any]]) -> str:
    return "\n".join(t["expr"] for p in panel_list for t in p["targets"])


# ------------------------------------------------------------------------ identity


def test_uid_and_schema_are_fixed(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "swarmd-overview"
    assert dashboard["id"] is None  # importable into any Grafana
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["title"] == "swarmd"


def test_variables(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert list(variables) == ["datasource", "instance", "agent", "traces"]
    source = variables["datasource"]
    assert (source["type"], source["query"]) == ("datasource", "prometheus")
    # Where exemplars' traces open: any Tempo data source, none selected by default.
    traces = variables["traces"]
    assert (traces["type"], traces["query"]) == ("datasource", "tempo")
    assert traces["current"]["value"] == "" and traces["includeAll"] is False
    for name, query in (
        ("instance", "label_values(swarmd_build_info, instance)"),
        ("agent", 'label_values(swarmd_jobs_total{instance=~"$instance"}, agent)'),
    ):
        variable = variables[name]
        assert variable["type"] == "query", name
        assert variable["datasource"] == {"type": "prometheus", "uid": DS_UID}, name
        assert variable["definition"] == query == variable["query"]["query"], name
        assert variable["multi"] is True and variable["includeAll"] is True, name
        assert variable["allValue"] == ".*", name  # the queries match with =~


# ------------------------------------------------------------------------ panels


def test_every_panel_and_target_uses_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    for panel in panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": DS_UID}, panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": DS_UID}, panel["title"]
    # No data source is named anywhere else either (an exported dashboard would pin one).
    text = DASHBOARD.read_text()
    uids = set(re.findall(r'"uid":\s*"([^"]*)"', text))
    assert uids == {"swarmd-overview", DS_UID, "-- Grafana --"}


def test_every_panel_has_a_unit(dashboard: dict[str, Any]) -> None:
    for panel in panels(dashboard):
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
        assert unit, f"{panel['title']}: no unit"


def test_units_fit_the_queries(dashboard: dict[str, Any]) -> None:
    for panel in panels(dashboard):
        unit = panel["fieldConfig"]["defaults"]["unit"]
        exprs = [t["expr"] for t in panel["targets"]]
        if all(re.search(r":p\d\d_rate5m\b", e) for e in exprs):
            assert unit == "s", panel["title"]
        if any("_bytes" in e for e in exprs):
            assert unit == "bytes", panel["title"]
        if all(e.startswith(("sum by (outcome) (rate(", "sum by (reason) (rate(")) for e in exprs):
            assert unit == "ops", panel["title"]
        if panel["type"] == "heatmap":
            assert unit == panel["options"]["yAxis"]["unit"] == "s"


def test_rows_and_what_they_show(dashboard: dict[str, Any]) -> None:
    by_row = rows(dashboard)
    assert list(by_row) == ROWS
    overview, latency, queue, runtime, schedules, state = (exprs_of(by_row[r]) for r in ROWS)
    assert "sum by (outcome) (rate(swarmd_jobs_total{" in overview
    in_flight = [
        p
        for p in by_row["Overview"]
        if {"swarmd_agents_in_flight", "swarmd_concurrency_limit", "swarmd_concurrent_peak"}
        <= metric_names(exprs_of([p]))
    ]
    assert in_flight, "no panel shows in flight vs limit vs peak"
    assert "swarmd_identity_violations_total" in overview
    assert 'state="dead"' in overview
    heatmaps = [p for p in by_row["Latency"] if p["type"] == "heatmap"]
    assert len(heatmaps) == 1
    (heat_target,) = heatmaps[0]["targets"]
    assert heat_target["format"] == "heatmap"
    assert metric_names(heat_target["expr"]) == {"swarmd_scheduling_overhead_seconds_bucket"}
    assert "sum by (le)" in heat_target["expr"]
    for metric in (
        "swarmd_scheduling_overhead_seconds",
        "swarmd_swarm_overhead_seconds",
        "swarmd_queue_wait_seconds",
        "swarmd_agent_duration_seconds",
    ):
        for quantile in ("p50", "p99"):
            assert re.search(rf":{metric}:{quantile}_rate5m\{{", latency), (metric, quantile)
    assert "instance_agent:swarmd_agent_duration_seconds:p99_rate5m" in latency  # by agent
    assert "sum by (state) (max without (worker) (swarmd_queue_jobs{" in queue
    assert "max without (worker) (rate(swarmd_ledger_index{" in queue
    assert "instance:swarmd_ledger_commit_seconds:p99_rate5m" in queue
    assert "swarmd_circuit_state" in queue
    assert "instance:swarmd_event_loop_lag_seconds:p99_rate5m" in runtime
    # what SwarmdScheduleLate watches: the next tick's lateness on the daemon most on time
    assert "min by (schedule) (time() - swarmd_schedule_next_tick_timestamp_seconds{" in schedules
    assert "swarmd_schedule_last_tick_timestamp_seconds" in schedules
    for metric in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"):
        assert metric in runtime, metric
    assert "sum by (part) (swarmd_state_bytes{" in state
    # how long housekeeping holds the backend, by step (swarmd bench soak's target: <= 5 ms)
    assert "sum by (step, le) (rate(swarmd_state_upkeep_step_seconds_bucket{" in state
    assert 'swarmd_state_upkeep_step_seconds_bucket{job="swarmd", instance=~"$instance", le="0.005"}' in state
    for metric in (
        "swarmd_state_filesystem_free_bytes",
        "swarmd_ledger_entries",
        "swarmd_ledger_oldest_timestamp_seconds",
        "swarmd_retention_last_run_timestamp_seconds",
    ):
        assert metric in state, metric


def test_every_panel_of_an_exemplar_histogram_shows_its_exemplars_and_links_them_to_the_trace(
    dashboard: dict[str, Any],
) -> None:
    shown: set[str] = set()
    for panel in panels(dashboard):
        names = metric_names(exprs_of([panel]))
        histograms = {
            h for h in EXEMPLAR_HISTOGRAMS if any(n.startswith(f"{h}_bucket") or f":{h}:" in n for n in names)
        }
        if not histograms:
            continue
        # Grafana asks Prometheus for the exemplars of the series a target with `exemplar` selects:
        # recording rules have none, so the target must read the histogram's buckets.
        exemplar_targets = [t for t in panel["targets"] if t.get("exemplar")]
        assert exemplar_targets, f"{panel['title']}: no target with exemplars on"
        for target in exemplar_targets:
            (bucket,) = metric_names(target["expr"])
            assert bucket.endswith("_bucket") and bucket.removesuffix("_bucket") in histograms, panel["title"]
            shown.add(bucket.removesuffix("_bucket"))
        # An exemplar's trace_id opens the trace in the data source the `traces` variable names.
        links = [
            link
            for override in panel["fieldConfig"]["overrides"]
            if override["matcher"] == {"id": "byName", "options": "trace_id"}
            for prop in override["properties"]
            if prop["id"] == "links"
            for link in prop["value"]
        ]
        assert links, f"{panel['title']}: no link from an exemplar's trace_id"
        for link in links:
            assert link["internal"]["datasourceUid"] == "${traces}", panel["title"]
            assert link["internal"]["query"]["query"] == "${__value.raw}", panel["title"]
    assert shown == set(EXEMPLAR_HISTOGRAMS)


def test_layout_has_no_overlaps(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        mine = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine


# ------------------------------------------------------------------------ queries


def test_queries_name_only_exported_series_or_recording_rules(dashboard: dict[str, Any]) -> None:
    exprs = [t["expr"] for t in targets(dashboard)]
    # label_values(<selector>, <label>): the selector is the query, the label is no series.
    exprs += [
        re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", v["definition"])
        for v in dashboard["templating"]["list"]
        if v["type"] == "query"
    ]
    assert unknown_names(exprs) == {}
    used = set().union(*(metric_names(e) for e in exprs))
    # The percentiles come from the shipped recording rules (loaded next to the alerts).
    assert used & recording_rule_names()


def test_queries_honour_the_variables_and_rate_interval(dashboard: dict[str, Any]) -> None:
    for target in targets(dashboard):
        expr = target["expr"]
        assert 'instance=~"$instance"' in expr, expr
        if any(name.startswith(AGENT_LABELLED) for name in metric_names(expr)):
            assert 'agent=~"$agent"' in expr, expr
        for window in re.findall(r"\[([^\]]*)\]", expr):
            assert window in {"$__rate_interval", "$__range"}, expr
        if re.search(r"\b(rate|increase)\(", expr):
            assert "[$__rate_interval]" in expr or "[$__range]" in expr, expr


#: Gauges every worker of one daemon reports alike (the whole queue, the last ledger index):
#: summed over the ``worker`` label they would count it twice (docs/design/workers.md).
PER_DAEMON_GAUGES = ("swarmd_queue_jobs", "swarmd_ledger_index", "swarmd_jobs_unroutable")


def test_no_query_sums_a_per_daemon_gauge_over_workers(dashboard: dict[str, Any]) -> None:
    for target in targets(dashboard):
        expr = target["expr"]
        for gauge in PER_DAEMON_GAUGES:
            for at in (m.start() for m in re.finditer(rf"\b{gauge}\{{", expr)):
                before = expr[:at]
                assert re.search(r"max without \(worker\) \((rate\()?$", before), expr


def grafana_to_promql(expr: str) -> str:
    """Expand Grafana's variables the way it would for one instance and all agents."""
    return (
        expr.replace("$__rate_interval", "1m")
        .replace("$__range", "1h")
        .replace("$instance", ".*")
        .replace("$agent", ".*")
    )


def test_queries_are_valid_promql(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """promtool parses every panel query (as a recording rule of a throwaway file)."""
    group = {
        "name": "dashboard",
        "rules": [
            {"record": f"dashboard:query:{i}", "expr": grafana_to_promql(t["expr"])}
            for i, t in enumerate(targets(dashboard))
        ],
    }
    rule_file = tmp_path / "dashboard_rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [group]}))
    result = promtool("check", "rules", str(rule_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(group['rules'])} rules found" in result.stdout
    # and the recording rules the dashboard reads are in the file Prometheus loads
    assert RECORDING_RULES.exists()


# ------------------------------------------------------------------------ provisioning


def test_dashboard_provisioning() -> None:
    config = load_yaml(PROVISIONING / "dashboards" / "swarmd.yml")
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")
    assert provider["folder"] == "swarmd"


def test_datasource_provisioning() -> None:
    config = load_yaml(PROVISIONING / "datasources" / "prometheus.yml")
    assert config["apiVersion"] == 1
    (source,) = config["datasources"]
    assert source["type"] == "prometheus"
    assert source["access"] == "proxy"
    assert source["url"] == "http://127.0.0.1:9090"
    assert source["jsonData"]["timeInterval"] == "15s"
    scrape = load_yaml(ROOT / "deploy" / "prometheus" / "prometheus.yml")
    assert scrape["global"]["scrape_interval"] == source["jsonData"]["timeInterval"]
