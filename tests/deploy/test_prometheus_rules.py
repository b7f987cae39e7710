"""deploy/prometheus/: rules that promtool accepts, unit tests that cover every alert, and
alerts an operator can act on (severity, summary, description, a runbook section).

promtool is found with :func:`require_tool`: without it the promtool tests skip, and under
``SWARMD_TEST_STRICT=1`` they fail. The static checks need only PyYAML.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.promql import (
    ALERT_RULES,
    PROCESS_SERIES,
    PROMETHEUS_DIR,
    RECORDING_RULES,
    ROOT,
    SWARMD_SERIES,
    load_yaml,
    metric_names,
    promtool,
    recording_rule_names,
    rules,
    unknown_names,
)

from swarmd.telemetry.metrics import Metrics
from swarmd.telemetry.supervisor_metrics import SupervisorMetrics

pytestmark = pytest.mark.prometheus

SCRAPE_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
TEST_DIR = PROMETHEUS_DIR / "tests"
RUNBOOK = ROOT / "deploy" / "RUNBOOK.md"
RUNBOOK_URL = "https://github.com/swarmd/swarmd/blob/main/deploy/RUNBOOK.md"
SEVERITIES = {"critical", "warning", "info"}
REQUIRED_ALERTS = {
    "SwarmdDown",
    "SwarmdIdentityViolation",
    "SwarmdSchedulingOverheadHigh",
    "SwarmdJobFailureRatioHigh",
    "SwarmdDeadLettersGrowing",
    "SwarmdQueueBacklogGrowing",
    "SwarmdLedgerStalled",
    "SwarmdEventLoopLagHigh",
    "SwarmdConcurrencySaturated",
    "SwarmdCircuitOpen",
    "SwarmdNotReady",
    "SwarmdRestarting",
    "SwarmdWorkerRestarting",
    "SwarmdLedgerCommitSlow",
}


def duration_seconds(value: str) -> float:
    """A Prometheus duration (``5m``, ``1h30m``, ``0s``) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|[smhdwy])", value)
    assert parts and "".join(n + u for n, u in parts) == value, f"bad duration {value!r}"
    return sum(int(n) * units[u] for n, u in parts)


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in rules(ALERT_RULES)}


def unit_test_files() -> list[Path]:
    files = sorted(TEST_DIR.glob("*.yml"))
    assert files, f"no promtool unit tests in {TEST_DIR}"
    return files


def unit_test_groups() -> list[dict[str, Any]]:
    return [group for path in unit_test_files() for group in load_yaml(path)["tests"]]


# ----------------------------------------------------------------------------- promtool


def test_promtool_check_rules_is_clean() -> None:
    result = promtool("check", "rules", "--lint=all", "--lint-fatal", str(RECORDING_RULES), str(ALERT_RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == 2, result.stdout
    assert "WARNING" not in result.stdout + result.stderr


def test_promtool_check_config_loads_both_rule_files() -> None:
    result = promtool("check", "config", str(SCRAPE_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 2 rule files found" in result.stdout
    config = load_yaml(SCRAPE_CONFIG)
    assert config["rule_files"] == ["recording_rules.yml", "alerts.yml"]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "swarmd"
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:9464"]


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", *map(str, unit_test_files()))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(unit_test_files()), result.stdout


def test_promtool_unit_tests_catch_a_changed_alert(tmp_path: Path) -> None:
    """The unit tests are not vacuous: moving a threshold (50 ms to 200 ms) fails them."""
    copy = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS_DIR, copy)
    text = (copy / "alerts.yml").read_text()
    mutated = text.replace("> 0.05\n", "> 0.2\n", 1)
    assert mutated != text
    (copy / "alerts.yml").write_text(mutated)
    result = promtool("test", "rules", "tests/alerts_test.yml", cwd=copy)
    assert result.returncode != 0
    assert "SwarmdSchedulingOverheadHigh" in result.stdout + result.stderr


# ------------------------------------------------------------- alert coverage by unit tests


def alert_checks(groups: list[dict[str, Any]], name: str) -> list[tuple[int, list[dict[str, Any]]]]:
    """(group index, that group's checks of alert ``name`` in eval-time order)."""
    found = []
    for index, group in enumerate(groups):
        checks = [c for c in group.get("alert_rule_test", []) if c["alertname"] == name]
        if checks:
            found.append((index, sorted(checks, key=lambda c: duration_seconds(c["eval_time"]))))
    return found


def test_every_alert_fires_with_exact_labels_and_annotations() -> None:
    groups = unit_test_groups()
    for name, rule in alerts().items():
        firing = [
            expected
            for _, checks in alert_checks(groups, name)
            for check in checks
            for expected in check.get("exp_alerts") or []
        ]
        assert firing, f"{name}: no promtool test expects it to fire"
        for expected in firing:
            labels = expected.get("exp_labels", {})
            assert labels.get("severity") == rule["labels"]["severity"], (name, labels)
            assert set(expected.get("exp_annotations", {})) == set(rule["annotations"]), name


def before_for_checks(groups: list[dict[str, Any]], name: str) -> list[tuple[int, str]]:
    """(group, eval_time) of the last silent check before the first firing one, per group."""
    found = []
    for index, checks in alert_checks(groups, name):
        first_firing = next((c for c in checks if c.get("exp_alerts")), None)
        if first_firing is None:
            continue
        limit = duration_seconds(first_firing["eval_time"])
        silent = [c for c in checks if not c.get("exp_alerts") and duration_seconds(c["eval_time"]) < limit]
        if silent:
            found.append((index, silent[-1]["eval_time"]))
    return found


def healthy_groups(groups: list[dict[str, Any]], name: str) -> list[tuple[int, list[str]]]:
    """(group, eval_times) of groups that check ``name`` only ever to be silent."""
    return [
        (index, [c["eval_time"] for c in checks])
        for index, checks in alert_checks(groups, name)
        if not any(c.get("exp_alerts") for c in checks)
    ]


def test_every_alert_is_silent_before_its_for_and_in_a_healthy_series(tmp_path: Path) -> None:
    """Statically: each alert has a silent check before it fires, and a healthy group.

    Then with promtool: at that silent check the alert is *pending* (so the silence is its
    `for:` at work, not a condition that is still false), and in the healthy groups it is
    not even pending.
    """
    groups = unit_test_groups()
    probes: list[dict[str, Any]] = []
    for name, rule in alerts().items():
        assert duration_seconds(rule.get("for", "0s")) > 0, f"{name}: no `for:`"
        pending = before_for_checks(groups, name)
        healthy = healthy_groups(groups, name)
        assert pending, f"{name}: no silent check before its `for:` elapses"
        assert healthy, f"{name}: no healthy series where it must stay silent"
        for index, eval_time in pending:
            probes.append(probe(groups[index], f"{name} pending at {eval_time}", name, "pending", eval_time, 1))
        for index, eval_times in healthy:
            for eval_time in eval_times:
                probes.append(probe(groups[index], f"{name} quiet at {eval_time}", name, None, eval_time, None))
    test_file = tmp_path / "probes_test.yml"
    test_file.write_text(
        yaml.safe_dump(
            {
                "rule_files": [str(RECORDING_RULES), str(ALERT_RULES)],
                "evaluation_interval": "1m",
                "tests": probes,
            }
        )
    )
    result = promtool("test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr


def probe(
    group: dict[str, Any], title: str, name: str, state: str | None, eval_time: str, count: int | None
) -> dict[str, Any]:
    """A copy of a unit-test group that asks ALERTS{alertname=name} at eval_time."""
    selector = f'alertname="{name}"' + (f', alertstate="{state}"' if state else "")
    samples = [] if count is None else [{"labels": "{}", "value": count}]
    return {
        "name": title,
        "interval": group.get("interval", "1m"),
        "input_series": group["input_series"],
        "promql_expr_test": [{"expr": f"count(ALERTS{{{selector}}})", "eval_time": eval_time, "exp_samples": samples}],
    }


# ------------------------------------------------------------------ what an operator reads


def test_required_alerts_exist() -> None:
    assert set(alerts()) >= REQUIRED_ALERTS


def runbook_anchors() -> dict[str, str]:
    """GitHub anchor -> section text, for every `## ` heading of the runbook."""
    sections = re.split(r"^## ", RUNBOOK.read_text(), flags=re.MULTILINE)[1:]
    anchors = {}
    for section in sections:
        heading, _, body = section.partition("\n")
        anchor = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors[anchor] = body
    return anchors


def test_every_alert_is_actionable() -> None:
    anchors = runbook_anchors()
    for name, rule in alerts().items():
        assert re.fullmatch(r"Swarmd[A-Z][A-Za-z]+", name), name
        assert set(rule["labels"]) == {"severity"}, name
        assert rule["labels"]["severity"] in SEVERITIES, name
        notes = rule["annotations"]
        assert set(notes) == {"summary", "description", "runbook_url"}, name
        assert notes["summary"] and "{{" not in notes["summary"], f"{name}: summary is fixed"
        assert "{{" in notes["description"], f"{name}: description is templated"
        assert notes["runbook_url"] == f"{RUNBOOK_URL}#{name.lower()}", name
        section = anchors.get(name.lower())
        assert section is not None, f"{name}: no runbook section"
        for part in ("**Means:**", "**Check:**", "**Do:**"):
            assert part in section, f"{name}: runbook section lacks {part}"
        assert f"**Severity:** {rule['labels']['severity']}" in section, name


def test_the_brief_thresholds_hold() -> None:
    rule = alerts()
    assert rule["SwarmdIdentityViolation"]["labels"]["severity"] == "critical"
    assert "swarmd_identity_violations_total" in rule["SwarmdIdentityViolation"]["expr"]
    assert duration_seconds(rule["SwarmdIdentityViolation"]["for"]) <= 60
    overhead = rule["SwarmdSchedulingOverheadHigh"]
    assert overhead["expr"].strip() == "instance:swarmd_scheduling_overhead_seconds:p99_rate5m > 0.05"
    assert duration_seconds(overhead["for"]) == 600
    assert "predict_linear(" in rule["SwarmdQueueBacklogGrowing"]["expr"]
    assert 'state="dead"' in rule["SwarmdDeadLettersGrowing"]["expr"]
    assert "swarmd_ledger_index" in rule["SwarmdLedgerStalled"]["expr"]
    assert 'state="ready"' in rule["SwarmdLedgerStalled"]["expr"]
    assert "== 2" in rule["SwarmdCircuitOpen"]["expr"]
    assert "process_start_time_seconds" in rule["SwarmdRestarting"]["expr"]
    down = rule["SwarmdDown"]["expr"]
    assert "up{" in down and "absent(" in down


# ---------------------------------------------------------------------- recording rules


def test_recording_rules_are_named_level_metric_operation() -> None:
    for name in recording_rule_names():
        level, metric, operation = name.split(":")
        assert re.fullmatch(r"instance(_[a-z]+)*", level), name
        assert metric.startswith("swarmd_"), name
        assert re.fullmatch(r"(p\d\d_)?(ratio_)?rate5m", operation), name


def test_every_recording_rule_has_a_unit_test() -> None:
    tested = {
        name
        for group in unit_test_groups()
        for case in group.get("promql_expr_test", [])
        for name in metric_names(case["expr"])
    }
    assert recording_rule_names() <= tested, recording_rule_names() - tested


def test_rules_name_only_exported_series_and_defined_rules() -> None:
    exprs = [rule["expr"] for rule in rules(RECORDING_RULES) + rules(ALERT_RULES)]
    assert unknown_names(exprs) == {}
    recorded = recording_rule_names()
    used = set().union(*(metric_names(e) for e in exprs))
    # Alerts read the percentiles through recording rules, never the other way round.
    assert used & recorded


def test_contract_matches_what_the_daemon_exports() -> None:
    """The names the rules and dashboard may use are the names swarmd.metrics exposes, and,
    with workers > 1, its supervisor beside them."""
    metrics = Metrics(agents=["echo"])
    metrics.set_schedule_ticks("report", last=1.0, next_tick=2.0)  # a series per schedule, once known
    supervisor = SupervisorMetrics(2, running=lambda: 2)
    exported = {
        sample.name
        for registry in (metrics.registry, supervisor.registry)
        for family in registry.collect()
        for sample in family.samples
    }
    assert set(SWARMD_SERIES) <= exported, set(SWARMD_SERIES) - exported
    assert {name for name in exported if name.startswith("swarmd_")} == set(SWARMD_SERIES)
    assert exported >= PROCESS_SERIES, PROCESS_SERIES - exported
