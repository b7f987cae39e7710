"""What the shipped rules and dashboard may query, and a small PromQL name extractor.

Shared by tests/deploy/test_prometheus_rules.py and tests/deploy/test_grafana_dashboard.py.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import yaml

from support.services import require_tool

ROOT: Final = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR: Final = ROOT / "deploy" / "prometheus"
RECORDING_RULES: Final = PROMETHEUS_DIR / "recording_rules.yml"
ALERT_RULES: Final = PROMETHEUS_DIR / "alerts.yml"

#: The daemon's metric contract (DESIGN.md, "Observability contract"), by type.
HISTOGRAMS: Final = (
    "swarmd_scheduling_overhead_seconds",
    "swarmd_swarm_overhead_seconds",
    "swarmd_queue_wait_seconds",
    "swarmd_agent_duration_seconds",
    "swarmd_ledger_commit_seconds",
    "swarmd_event_loop_lag_seconds",
    "swarmd_state_upkeep_step_seconds",
)
COUNTERS: Final = (
    "swarmd_jobs",
    "swarmd_identity_violations",
    "swarmd_rejected_jobs",
    "swarmd_event_loop_stalls",
    "swarmd_stray_task_errors",
    "swarmd_api_refused",
    "swarmd_worker_restarts",  # the supervisor's (workers > 1): swarmd.telemetry.supervisor_metrics
    "swarmd_retention_runs",
    "swarmd_finished_expired",
)
GAUGES: Final = (
    "swarmd_agents_in_flight",
    "swarmd_concurrent_peak",
    "swarmd_concurrency_limit",
    "swarmd_ledger_index",
    "swarmd_queue_jobs",
    "swarmd_build_info",
    "swarmd_circuit_state",
    "swarmd_ready",
    "swarmd_abandoned_tasks",
    "swarmd_jobs_unroutable",
    "swarmd_schedule_last_tick_timestamp_seconds",
    "swarmd_schedule_next_tick_timestamp_seconds",
    "swarmd_workers_running",  # the supervisor's (workers > 1)
    "swarmd_state_bytes",
    "swarmd_state_filesystem_free_bytes",
    "swarmd_ledger_entries",
    "swarmd_ledger_oldest_timestamp_seconds",
    "swarmd_retention_last_run_timestamp_seconds",
)
#: Every ``swarmd_*`` series name as exposed: counters with ``_total``, histograms as
#: ``_bucket``/``_sum``/``_count``.
SWARMD_SERIES: Final = frozenset(
    [f"{h}{suffix}" for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")]
    + [f"{c}_total" for c in COUNTERS]
    + list(GAUGES)
)
#: prometheus-client's ProcessCollector on Linux.
PROCESS_SERIES: Final = frozenset(
    {
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_start_time_seconds",
        "process_open_fds",
        "process_max_fds",
    }
)


def load_yaml(path: Path) -> Any:
    with path.open() as handle:
        return yaml.safe_load(handle)


def rules(path: Path) -> list[dict[str, Any]]:
    """Every rule of a Prometheus rule file, groups flattened."""
    return [rule for group in load_yaml(path)["groups"] for rule in group["rules"]]


def recording_rule_names() -> frozenset[str]:
    return frozenset(rule["record"] for rule in rules(RECORDING_RULES))


def allowed_series() -> frozenset[str]:
    """What a shipped query may name: the contract, the recording rules, ``up``, process_*."""
    return SWARMD_SERIES | PROCESS_SERIES | recording_rule_names() | {"up"}


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE)
_TOKEN = re.compile(
    r"(?P<num>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:ms|[smhdwy])*)"
    r"|(?P<var>\$\{?\w+\}?)"
    r"|(?P<id>[A-Za-z_:][A-Za-z0-9_:]*)(?P<call>\s*\()?"
)
_KEYWORDS: Final = frozenset({"and", "or", "unless", "offset", "bool", "inf", "nan", "atan2", "start", "end"})


def metric_names(expr: str) -> set[str]:
    """The metric (or recorded series) names an expression selects.

    Enough PromQL for the shipped files: strings, label matchers, ranges and grouping
    clauses are dropped; what remains is a function, an aggregation, a keyword, a number, a
    Grafana variable or a metric name.
    """
    text = _STRING.sub(" ", expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _TOKEN.finditer(text):
        name = match.group("id")
        if name is None or match.group("call") or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def unknown_names(exprs: Iterable[str]) -> dict[str, set[str]]:
    """expr -> the names in it that no shipped query may use."""
    allowed = allowed_series()
    found = {expr: metric_names(expr) - allowed for expr in exprs}
    return {expr: names for expr, names in found.items() if names}


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run promtool (skip without it, fail under SWARMD_TEST_STRICT=1); never raises on exit."""
    return subprocess.run(
        [require_tool("promtool"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )
