"""End to end: a real Prometheus scrapes a real `swarmd serve` and evaluates the shipped rules.

The test starts Prometheus (the ``prometheus`` program: skipped without it, failed under
``SWARMD_TEST_STRICT=1``) on 127.0.0.1 with a temporary config derived from
deploy/prometheus/prometheus.yml (1 s scrape and evaluation intervals, the test's daemon as the
only target, the shipped recording and alert rules) and temporary storage. The daemon runs a
workload with retries (``flaky``), dead letters (``fail``, one attempt), swarms, successes on a
few agents, and exactly one identity violation (``liar``); small batches keep coming while the
test waits, so counters move between scrapes and rate() has data.

Then, through Prometheus's HTTP API, with a deadline on every wait:

- ``up`` is 1 for the daemon (Prometheus picks a new target up after about 5 s);
- every rule evaluates without error, and every recording rule yields data;
- every query of every panel of grafana/dashboards/swarmd.json (and every variable query)
  returns a series with a value, with "All" selected and with one instance and one agent
  selected, Grafana's built-in variables expanded as the constants below say;
- the job failure ratio counts jobs, not attempts (1 for ``fail``, 0 for ``flaky``, whose jobs
  all succeed on their retry), and SwarmdJobFailureRatioHigh is pending for ``fail`` only;
- SwarmdIdentityViolation is pending (its ``for:`` is longer than this test) or firing, for
  ``liar`` only, and Prometheus counts exactly one violation.

"Data" means at least one series whose value is not NaN: a quantile over a histogram with no
observation in its window is NaN, which Grafana draws as nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from support.harness import Daemon, running, wait_until
from support.prometheus import Prometheus
from support.promql import ALERT_RULES, PROMETHEUS_DIR, RECORDING_RULES, ROOT, load_yaml, recording_rule_names, rules
from support.services import require_tool

from swarmd.client import Client

pytestmark = [pytest.mark.slow, pytest.mark.prometheus, pytest.mark.timeout(120)]

DASHBOARD: Final = ROOT / "grafana" / "dashboards" / "swarmd.json"
SCRAPE_CONFIG: Final = PROMETHEUS_DIR / "prometheus.yml"

#: Scrape and rule-evaluation interval of the test's Prometheus.
INTERVAL: Final = "1s"
#: Grafana's expansions for a data source whose scrape interval (``timeInterval``) is 1 s.
#: ``$__rate_interval`` is max($__interval + scrape interval, 4 x scrape interval): 4 s is the
#: smallest window Grafana ever uses, so a panel that has data here has data at any zoom.
#: ``$__interval`` is at least the scrape interval. ``$__range`` is the dashboard's default
#: time range (``time.from``, read from the JSON).
GRAFANA_BUILTINS: Final = {
    "__rate_interval": "4s",
    "__rate_interval_ms": "4000",
    "__interval": "1s",
    "__interval_ms": "1000",
}
#: The dashboard's variables with "All" selected (their ``allValue``). The queries are also
#: run with one instance and one agent selected (see :func:`one_selected`): ``.*`` matches a
#: missing label too, so only a real value shows a filter on a label the series lack.
ALL_SELECTED: Final = {"instance": ".*", "agent": ".*"}
#: The agent selected then: it runs in every batch of the workload.
ONE_AGENT: Final = "echo"

#: Recording rules that cannot have data in a test of under a minute: name -> why.
#: (Every shipped rule is over a 5 m window, which has data after two scrapes.)
NO_DATA_EXPECTED: Final[dict[str, str]] = {}

#: One identity violation, by this agent.
LIAR: Final = "liar"


# ----------------------------------------------------------------------------- Prometheus


def config_for(target: str) -> dict[str, Any]:
    """The shipped scrape config, made fast and pointed at the test's daemon."""
    config: dict[str, Any] = load_yaml(SCRAPE_CONFIG)
    config["global"].update(scrape_interval=INTERVAL, evaluation_interval=INTERVAL)
    shipped_rules = [str((PROMETHEUS_DIR / path).resolve()) for path in config["rule_files"]]
    assert sorted(shipped_rules) == sorted(str(path) for path in (RECORDING_RULES, ALERT_RULES))
    config["rule_files"] = shipped_rules
    for scrape in config["scrape_configs"]:
        scrape.update(scrape_interval=INTERVAL, scrape_timeout=INTERVAL)
        scrape["static_configs"] = [{"targets": [target]}]
    return config


def scrape_job() -> str:
    (job,) = [scrape["job_name"] for scrape in load_yaml(SCRAPE_CONFIG)["scrape_configs"]]
    return str(job)


# ----------------------------------------------------------------------------- workload


class Workload:
    """Submits the test's jobs through the Python client, straight into the daemon's queue."""

    def __init__(self, state_dir: Path) -> None:
        self.client = Client(state_dir)
        self.batches = 0

    def batch(self) -> None:
        """A little more work, so that every counter keeps moving between scrapes."""
        self.batches += 1
        n = self.batches
        self.client.submit_many(
            [{"agent": "echo", "gid": f"GID-echo-{n}-{i}", "payload": {"i": i}} for i in range(3)]
            + [{"agent": "sleep", "gid": f"GID-sleep-{n}-{i}", "payload": {"seconds": 0.005}} for i in range(3)]
        )
        # One retry, then success (few at once, so that the breaker never opens).
        self.client.submit("flaky", gid=f"GID-flaky-{n}", payload={"fail_times": 1}, max_attempts=3)
        self.client.submit_many(
            [{"agent": "sleep", "gid": f"GID-swarm-{n}-{i}", "payload": {"seconds": 0.01}} for i in range(3)],
            swarm=True,
        )

    def fail_and_lie(self) -> None:
        """Two dead letters (a failure on the only attempt) and the one identity violation."""
        for n in range(2):
            self.client.submit("fail", gid=f"GID-fail-{n}", payload={"n": n}, max_attempts=1)
        self.client.submit(LIAR, gid="GID-liar")

    def close(self) -> None:
        self.client.close()


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    # A schedule ticking every second, so that the dashboard's schedules row has data too; and a
    # ledger kept at 20 live entries, archived every second, for its housekeeping panels.
    config = tmp_path / "swarmd.toml"
    config.write_text(
        'ledger_max_entries = 20\ncheckpoint_interval = "1s"\n'
        '[[schedule]]\nagent = "echo"\ngid = "GID-TICK"\ncron = "* * * * * *"\ncatch_up = "none"\n'
    )
    with running(tmp_path / "state", "--agents", "support.agents", "--config", str(config)) as started:
        yield started  # killed by `running` at the end, pass or fail


@pytest.fixture
def prometheus(tmp_path: Path, daemon: Daemon) -> Iterator[Prometheus]:
    require_tool("prometheus")
    server = Prometheus(tmp_path, config_for(f"127.0.0.1:{daemon.port}"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def workload(daemon: Daemon) -> Iterator[Workload]:
    feeder = Workload(daemon.state_dir)
    try:
        yield feeder
    finally:
        feeder.close()


# ----------------------------------------------------------------------------- the dashboard


def one_selected(instance: str) -> dict[str, str]:
    """The variables with one value each, regex-escaped as Grafana does for a multi-value
    variable (and escaped again for the PromQL string it lands in)."""
    return {
        name: re.escape(value).replace("\\", "\\\\") for name, value in (("instance", instance), ("agent", ONE_AGENT))
    }


def dashboard_queries(selected: dict[str, str]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every variable query, variables expanded."""
    dashboard = json.loads(DASHBOARD.read_text())
    values = {**GRAFANA_BUILTINS, **dashboard_range(dashboard), "datasource": "prometheus", **selected}
    choice = ", ".join(f"${name}={value}" for name, value in selected.items())
    queries = []
    for panel in all_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            where = f"panel {panel.get('id')} {panel.get('title')!r} target {target.get('refId')} ({choice})"
            queries.append((where, expand(target["expr"], values, where)))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            where = f"variable ${variable['name']} ({choice})"
            # label_values(<selector>, <label>): Grafana asks for the label's values on the
            # series of <selector>; the selector returning data is what the dropdown needs.
            selector = re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", variable["definition"])
            queries.append((where, expand(selector, values, where)))
    return queries


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def dashboard_range(dashboard: dict[str, Any]) -> dict[str, str]:
    """``$__range`` and friends for the dashboard's default time range (``now-6h`` .. ``now``)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    match = re.fullmatch(r"now-(\d+)([smhdw])", dashboard["time"]["from"])
    assert match and dashboard["time"]["to"] == "now", f"unexpected default range {dashboard['time']}"
    seconds = int(match.group(1)) * units[match.group(2)]
    return {"__range": f"{seconds}s", "__range_s": str(seconds), "__range_ms": str(seconds * 1000)}


_VARIABLE = re.compile(r"\$\{(\w+)(?::[\w-]+)?\}|\[\[(\w+)(?::[\w-]+)?\]\]|\$(\w+)")


def expand(expr: str, values: dict[str, str], where: str) -> str:
    """Grafana's variable expansion: ``$var``, ``${var}``, ``${var:format}``, ``[[var]]``.

    Every format gives the same text here: the ``allValue``, or one value with no character
    that the formats treat differently.
    """

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group is not None)
        assert name in values, f"{where}: no value for Grafana variable {name!r} in {expr!r}"
        return values[name]

    return _VARIABLE.sub(value, expr)


# ----------------------------------------------------------------------------- the test


def test_prometheus_scrapes_swarmd_and_evaluates_the_shipped_rules_and_dashboard(
    daemon: Daemon, prometheus: Prometheus, workload: Workload
) -> None:
    job = scrape_job()
    selector = f'job="{job}", instance="127.0.0.1:{daemon.port}"'

    def feeding(check: Callable[[], object]) -> Callable[[], object]:
        """A wait_until predicate that first submits one more batch of work."""

        def predicate() -> object:
            assert daemon.proc is not None and daemon.proc.poll() is None, f"the daemon died:\n{daemon.log()}"
            workload.batch()
            return check()

        return predicate

    def wait(check: Callable[[], object], what: str, timeout: float, details: Callable[[], str]) -> None:
        try:
            wait_until(feeding(check), timeout=timeout, what=what, step=0.5)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{details()}\n--- prometheus log:\n{prometheus.log()}") from None

    # The target is up: Prometheus has found and scraped the daemon.
    wait(
        lambda: [s["value"][1] for s in prometheus.query(f"up{{{selector}}}")] == ["1"],
        "up == 1 for the daemon",
        25,
        lambda: f"targets: {prometheus.api('targets')['activeTargets']}",
    )

    # The counters are seen at 0 first, so that the dead letters and the violation are
    # increases Prometheus sees (not values a series is born with).
    wait(
        lambda: prometheus.query(f'swarmd_identity_violations_total{{{selector}, agent="{LIAR}"}}'),
        "the liar's identity-violation counter at 0",
        10,
        lambda: "",
    )
    workload.fail_and_lie()

    # Every rule evaluates cleanly; every recording rule and every dashboard query has data.
    assert set(NO_DATA_EXPECTED) <= recording_rule_names(), "NO_DATA_EXPECTED names a rule that is not shipped"
    expected = {
        f"recording rule {name}": f"{name}{{{selector}}}"
        for name in sorted(recording_rule_names() - set(NO_DATA_EXPECTED))
    }
    expected.update(dashboard_queries(ALL_SELECTED))
    expected.update(dashboard_queries(one_selected(f"127.0.0.1:{daemon.port}")))
    empty = dict(expected)
    rule_problems: list[str] = []

    def all_have_data() -> bool:
        for where, expr in list(empty.items()):
            if prometheus.has_data(expr):
                del empty[where]
        rule_problems[:] = rule_health(prometheus)
        return not empty and not rule_problems

    wait(
        all_have_data,
        "every recording rule and dashboard query to return data, and every rule to evaluate",
        30,
        lambda: "\n".join(
            [f"no data: {where}: {expr}" for where, expr in empty.items()]
            + [f"rule problem: {problem}" for problem in rule_problems]
        ),
    )

    # The failure ratio counts jobs, not attempts: `fail` dead-letters every job (1), while
    # every `flaky` job succeeds on its retry (0, though half of its attempts fail).
    ratio = f'instance_agent:swarmd_jobs_failed:ratio_rate5m{{{selector}, agent=~"fail|flaky|echo"}}'
    wait(
        lambda: by_agent(prometheus.query(ratio)) == {"fail": "1", "flaky": "0", "echo": "0"},
        "the job failure ratio: 1 for `fail`, 0 for `flaky` and `echo`",
        15,
        lambda: f"{ratio}: {by_agent(prometheus.query(ratio))}",
    )

    # SwarmdIdentityViolation pending (its `for:` is longer than this test) or firing, for the
    # liar only; SwarmdJobFailureRatioHigh likewise for `fail` only, never for `flaky`.
    def alerting(alertname: str) -> dict[str, str]:
        found = [a for a in prometheus.api("alerts")["alerts"] if a["labels"]["alertname"] == alertname]
        assert all(a["labels"]["instance"] == f"127.0.0.1:{daemon.port}" for a in found), found
        return {a["labels"]["agent"]: a["state"] for a in found if a["state"] in {"pending", "firing"}}

    wait(
        lambda: alerting("SwarmdIdentityViolation") and alerting("SwarmdJobFailureRatioHigh"),
        "SwarmdIdentityViolation and SwarmdJobFailureRatioHigh to be pending or firing",
        15,
        lambda: f"alerts: {prometheus.api('alerts')['alerts']}",
    )
    assert set(alerting("SwarmdIdentityViolation")) == {LIAR}
    assert set(alerting("SwarmdJobFailureRatioHigh")) == {"fail"}
    counted = prometheus.query(f"sum by (agent) (swarmd_identity_violations_total{{{selector}}}) > 0")
    assert by_agent(counted) == {LIAR: "1"}, counted


def by_agent(series: list[dict[str, Any]]) -> dict[str, str]:
    return {s["metric"]["agent"]: s["value"][1] for s in series}


def rule_health(prometheus: Prometheus) -> list[str]:
    """Why the loaded rules are not all evaluated and healthy (empty when they are).

    Also checks that Prometheus loaded exactly the shipped rules.
    """
    loaded = [rule for group in prometheus.api("rules")["groups"] for rule in group["rules"]]
    shipped = {
        str(rule.get("record") or rule["alert"]) for path in (RECORDING_RULES, ALERT_RULES) for rule in rules(path)
    }
    problems = []
    if {rule["name"] for rule in loaded} != shipped:
        problems.append(f"loaded {sorted(rule['name'] for rule in loaded)}, shipped {sorted(shipped)}")
    for rule in loaded:
        if rule["health"] != "ok" or rule.get("lastError"):
            problems.append(f"{rule['name']}: health {rule['health']} {rule.get('lastError', '')}".rstrip())
    return problems
