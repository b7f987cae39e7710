"""Issue 4 end to end: metrics, spans and logs of a real daemon agree with what really happened.

Every number is checked against an independent record of the same events: the ledger (read
with `swarmd ledger export`), the SQLite queue, the test's own clock, spans decoded by an
OTLP/HTTP receiver running in the test. No assertion only checks that a series exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from prometheus_client.parser import text_string_to_metric_families
from support.harness import (
    Daemon,
    base_env,
    free_port,
    ledger,
    ledger_count,
    queue_states,
    running,
    submit,
    swarmd,
    wait_until,
)
from support.otlp import OtlpReceiver, attrs
from support.paths import REPO
from support.services import require_tool

from swarmd.client import Client
from swarmd.config import Settings
from swarmd.model import Job, new_job
from swarmd.queue.factory import open_backend
from swarmd.telemetry.tracing import Tracing

pytestmark = pytest.mark.slow

Labels = frozenset[tuple[str, str]]
#: A sample of the exposition: (sample name, labels).
Series = tuple[str, Labels]


# -- reading /metrics --------------------------------------------------------------------
def scrape(daemon: Daemon) -> str:
    status, text = daemon.get("/metrics")
    assert status == 200, f"/metrics answered {status}"
    return text


def samples(text: str) -> dict[Series, float]:
    """Every sample of an exposition, keyed by its name and labels."""
    found: dict[Series, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in found, f"series {key} exposed twice"
            found[key] = sample.value
    return found


def by_labels(found: dict[Series, float], name: str, *keys: str) -> dict[tuple[str, ...], float]:
    """The samples named ``name``, keyed by the values of the labels ``keys``."""
    return {tuple(dict(labels)[k] for k in keys): value for (n, labels), value in found.items() if n == name}


def one(found: dict[Series, float], name: str) -> float:
    return found[(name, frozenset())]


# -- what the ledger implies ---------------------------------------------------------------
def runs_implied_by(entries: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    """``swarmd_jobs_total`` per (agent, outcome) that the ledger entries imply.

    Each entry is a job's final outcome after ``attempt`` runs. In these workloads every run
    before the last one failed (the agents that retry raise an exception), and each such run
    counts once as ``failed`` and once as ``retried``. The last run counts its own outcome
    (``timed_out`` when the entry's error is a Timeout) and, when the job was dead-lettered,
    ``dead_lettered`` as well.
    """
    counts: Counter[tuple[str, str]] = Counter()
    for entry in entries:
        agent, earlier = entry["agent"], entry["attempt"] - 1
        counts[agent, "failed"] += earlier
        counts[agent, "retried"] += earlier
        final = entry["outcome"]
        if final == "dead_lettered":
            counts[agent, "dead_lettered"] += 1
            counts[agent, "timed_out" if entry["error"]["type"] == "Timeout" else "failed"] += 1
        else:
            counts[agent, final] += 1
    return +counts


def swarm_overhead_from(entries: list[dict[str, Any]], swarm_id: str) -> float:
    members = [entry for entry in entries if entry.get("swarm_id") == swarm_id]
    assert len(members) == 50
    return float(
        max(e["finished_at"] for e in members)
        - min(e["reserved_at"] for e in members)
        - max(e["duration_s"] for e in members)
    )


# -- 1. metrics against the ledger ---------------------------------------------------------
PEAK = 12


def test_metrics_count_what_the_ledger_records(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {"SWARMD_BACKOFF_BASE": "0.01"}
    with running(state, "--agents", "support.agents", "--max-concurrent", "32", env=env) as daemon:
        # The barrier opens only once PEAK jobs run at once: the peak is at least PEAK...
        barrier = submit(state, "barrier", "GID-peak", payload={"parties": PEAK, "key": "peak"}, count=PEAK)
        wait_until(lambda: ledger_count(state) == PEAK, what="the barrier jobs")
        found = samples(scrape(daemon))
        assert one(found, "swarmd_concurrent_peak") == PEAK
        assert one(found, "swarmd_concurrency_limit") == 32  # the peak is not just the limit
        # ...and at most PEAK: the rest of the workload is PEAK - 1 jobs in all.
        slow = submit(state, "slow", "GID-cancel", payload={"seconds": 3600})
        wait_until(lambda: daemon.metrics().get("swarmd_agents_in_flight") == 1, what="the slow job running")
        swarmd("cancel", "--state-dir", str(state), slow[0])  # cancelled while running
        wait_until(lambda: ledger_count(state) == PEAK + 1, what="the cancelled job")
        echo = submit(state, "echo", "GID-ok", payload={"n": 1}, count=3)
        flaky = submit(state, "flaky", "GID-flaky", payload={"fail_times": 1}, count=2)
        retried_dead = submit(state, "fail", "GID-fail", "--max-attempts", "2", count=2)
        permanent = submit(state, "fail", "GID-perm", payload={"permanent": True})
        timed_out = submit(
            state, "slow", "GID-slow", "--timeout", "0.05", "--max-attempts", "1", payload={"seconds": 60}
        )
        liar = submit(state, "liar", "GID-honest")
        total = PEAK + 1 + 3 + 2 + 2 + 1 + 1 + 1
        wait_until(lambda: ledger_count(state) == total, what="the whole workload")
        entries = ledger(state)
        dead = sum(entry["outcome"] == "dead_lettered" for entry in entries)
        assert dead == 4
        # Queue depths are sampled every 2 s: wait for a snapshot taken after the last commit.
        wait_until(
            lambda: daemon.metrics().get('swarmd_queue_jobs{state="dead"}') == dead,
            what="queue depths to settle",
        )
        found = samples(scrape(daemon))
        assert daemon.stop() == 0

    by_id = {entry["job_id"]: entry for entry in entries}
    # The workload happened as designed (so the counts below test the metrics, not the agents).
    assert {by_id[j]["outcome"] for j in barrier + echo} == {"succeeded"}
    assert by_id[slow[0]]["outcome"] == "cancelled"
    assert [(by_id[j]["outcome"], by_id[j]["attempt"]) for j in flaky] == [("succeeded", 2)] * 2
    assert [(by_id[j]["outcome"], by_id[j]["attempt"]) for j in retried_dead] == [("dead_lettered", 2)] * 2
    assert by_id[permanent[0]]["error"]["type"] == "Permanent" and by_id[permanent[0]]["attempt"] == 1
    assert by_id[timed_out[0]]["error"]["type"] == "Timeout"

    # swarmd_jobs_total: every (agent, outcome) series equals what the ledger implies.
    expected = runs_implied_by(entries)
    jobs = by_labels(found, "swarmd_jobs_total", "agent", "outcome")
    assert set(expected) <= set(jobs)
    assert {key: value for key, value in jobs.items() if value} == dict(expected)
    outcomes: Counter[str] = Counter()
    for (_, outcome), n in expected.items():
        outcomes[outcome] += n
    assert dict(outcomes) == {
        "succeeded": PEAK + 3 + 2 + 1,
        "cancelled": 1,
        "dead_lettered": 4,
        "failed": 2 + 2 * 2 + 1,  # flaky's first runs, both runs of retried_dead, permanent
        "retried": 2 + 2,
        "timed_out": 1,
    }
    # Handler run time is observed once per run, under the run's own outcome.
    durations = by_labels(found, "swarmd_agent_duration_seconds_count", "agent", "outcome")
    runs = {key: n for key, n in expected.items() if key[1] not in ("retried", "dead_lettered")}
    assert {key: value for key, value in durations.items() if value} == runs

    # Exactly one identity violation, counted, and recorded in the liar's ledger entry.
    violations = by_labels(found, "swarmd_identity_violations_total", "agent")
    assert sum(violations.values()) == 1 and violations[("liar",)] == 1
    flagged = [entry["job_id"] for entry in entries if entry.get("identity_violation")]
    assert flagged == liar

    assert one(found, "swarmd_concurrent_peak") == PEAK
    assert one(found, "swarmd_ledger_index") == entries[-1]["index"] == total - 1
    assert by_labels(found, "swarmd_queue_jobs", "state") == {
        ("ready",): 0,
        ("delayed",): 0,
        ("leased",): 0,
        ("dead",): dead,
    }
    assert queue_states(state) == {"dead": dead}  # the queue itself agrees
    dlq = msgspec.json.decode(swarmd("dlq", "list", "--json", "--state-dir", str(state)).stdout)
    assert sorted(info["job_id"] for info in dlq) == sorted(retried_dead + permanent + timed_out)


def summed_over_workers(found: dict[Series, float], name: str, *keys: str) -> dict[tuple[str, ...], float]:
    """The samples named ``name`` of a daemon with workers, summed over their ``worker`` label."""
    totals: dict[tuple[str, ...], float] = {}
    for (n, labels), value in found.items():
        if n == name:
            assert "worker" in dict(labels), (n, labels)
            key = tuple(dict(labels)[k] for k in keys)
            totals[key] = totals.get(key, 0.0) + value
    return totals


def test_metrics_of_two_workers_add_up_to_what_the_ledger_records(tmp_path: Path) -> None:
    """The same cross-check with ``--workers 2``: each counter summed over ``worker`` equals
    what the ledger implies; the gauges of the whole queue agree with it on every worker."""
    state = tmp_path / "state"
    env = {"SWARMD_BACKOFF_BASE": "0.01"}
    with running(state, "--agents", "support.agents", "--workers", "2", env=env) as daemon:
        echo = submit(state, "echo", "GID-ok", payload={"n": 1}, count=30)
        flaky = submit(state, "flaky", "GID-flaky", payload={"fail_times": 1}, count=4)
        retried_dead = submit(state, "fail", "GID-fail", "--max-attempts", "2", count=2)
        timed_out = submit(
            state, "slow", "GID-slow", "--timeout", "0.05", "--max-attempts", "1", payload={"seconds": 60}
        )
        liar = submit(state, "liar", "GID-honest")
        total = 30 + 4 + 2 + 1 + 1
        wait_until(lambda: ledger_count(state) == total, what="the whole workload")
        entries = ledger(state)
        dead = sum(entry["outcome"] == "dead_lettered" for entry in entries)
        assert dead == 3

        def settled() -> bool:  # each worker's counters and queue snapshot caught up
            found = samples(scrape(daemon))
            return sum(summed_over_workers(found, "swarmd_jobs_total", "outcome").values()) == sum(
                runs_implied_by(entries).values()
            ) and set(by_labels(found, "swarmd_queue_jobs", "state", "worker").items()) >= {
                (("dead", "0"), dead),
                (("dead", "1"), dead),
            }

        wait_until(settled, what="both workers' metrics to settle")
        found = samples(scrape(daemon))
        assert daemon.stop() == 0

    expected = runs_implied_by(entries)
    jobs = summed_over_workers(found, "swarmd_jobs_total", "agent", "outcome")
    assert {key: value for key, value in jobs.items() if value} == dict(expected)
    durations = summed_over_workers(found, "swarmd_agent_duration_seconds_count", "agent", "outcome")
    runs = {key: n for key, n in expected.items() if key[1] not in ("retried", "dead_lettered")}
    assert {key: value for key, value in durations.items() if value} == runs
    violations = summed_over_workers(found, "swarmd_identity_violations_total", "agent")
    assert sum(violations.values()) == 1 and violations[("liar",)] == 1
    assert [entry["job_id"] for entry in entries if entry.get("identity_violation")] == liar
    # The head of the one chain is the highest index any worker committed.
    assert max(by_labels(found, "swarmd_ledger_index", "worker").values()) == entries[-1]["index"] == total - 1
    assert [entry["index"] for entry in entries] == list(range(total))
    assert {by_id["outcome"] for by_id in entries if by_id["job_id"] in echo + flaky} == {"succeeded"}
    assert sorted(e["job_id"] for e in entries if e["outcome"] == "dead_lettered") == sorted(retried_dead + timed_out)
    assert swarmd("ledger", "verify", "--state-dir", str(state), check=False).returncode == 0


# -- 2. swarm overhead against the ledger and an external clock --------------------------
def test_swarm_overhead_is_what_the_ledger_and_an_external_clock_say(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with running(state, "--max-concurrent", "64") as daemon:
        # Through the CLI, as an operator would; the external clock includes its start-up.
        started = time.time()
        out = swarmd(
            "submit", "--state-dir", str(state), "--agent", "sleep", "--gid", "GID-swarm",
            "--count", "50", "--swarm", "--payload", '{"seconds": 0.01}', "--json",
        )  # fmt: skip
        cli_swarm = msgspec.json.decode(out.stdout)["swarm_id"]
        wait_until(lambda: ledger_count(state) == 50, what="the CLI swarm", step=0.001)
        cli_wall = time.time() - started
        wait_until(
            lambda: daemon.metrics().get("swarmd_swarm_overhead_seconds_count") == 1, what="the swarm's observation"
        )
        cli_metric = daemon.metrics()["swarmd_swarm_overhead_seconds_sum"]

        # Through the library, so that the external clock starts right at the submit.
        with Client(state, tracing=Tracing(None)) as client:
            started = time.time()
            lib_swarm = client.submit_many(
                [{"agent": "sleep", "gid": f"GID-s{i}", "payload": {"seconds": 0.01}} for i in range(50)], swarm=True
            ).swarm_id
            submit_took = time.time() - started  # printed only: reservations may start before it returns
            wait_until(lambda: ledger_count(state) == 100, what="the library swarm", step=0.001)
            lib_wall = time.time() - started
        wait_until(lambda: daemon.metrics().get("swarmd_swarm_overhead_seconds_count") == 2, what="the second one")
        lib_metric = daemon.metrics()["swarmd_swarm_overhead_seconds_sum"] - cli_metric
        assert daemon.stop() == 0

    entries = ledger(state)
    assert cli_swarm is not None and lib_swarm is not None
    for swarm_id, metric, wall in ((cli_swarm, cli_metric, cli_wall), (lib_swarm, lib_metric, lib_wall)):
        from_ledger = swarm_overhead_from(entries, swarm_id)
        longest = max(e["duration_s"] for e in entries if e.get("swarm_id") == swarm_id)
        print(
            f"\nswarm {swarm_id}: metric {metric * 1e3:.3f} ms, ledger {from_ledger * 1e3:.3f} ms "
            f"(diff {abs(metric - from_ledger) * 1e9:.0f} ns), external wall {wall * 1e3:.3f} ms, "
            f"wall - longest agent {(wall - longest) * 1e3:.3f} ms"
        )
        assert metric == pytest.approx(from_ledger, abs=1e-6)
        # The wall time holds the longest agent (>= 10 ms of sleep) plus the overhead.
        assert 0 < metric <= wall - 0.010
    print(f"library submit of the second swarm took {submit_took * 1e3:.3f} ms")


# -- 3. promtool ---------------------------------------------------------------------------
def test_promtool_check_metrics_on_a_live_scrape_reports_nothing(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    state = tmp_path / "state"
    with running(state, "--agents", "support.agents") as daemon:
        submit(state, "echo", "GID-a", count=3)
        submit(state, "fail", "GID-b", "--max-attempts", "1")
        submit(state, "liar", "GID-c")
        wait_until(lambda: ledger_count(state) == 5, what="the jobs")
        text = scrape(daemon)
        assert daemon.stop() == 0
    assert "swarmd_jobs_total" in text and "process_cpu_seconds_total" in text
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60, check=False
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


# -- 4. cardinality ------------------------------------------------------------------------
def test_ten_thousand_gids_add_no_series(tmp_path: Path) -> None:
    """Every series, the default process/platform/GC collectors' included, is the same set.

    Those collectors have fixed label sets (``generation`` 0-2, the interpreter's version),
    so nothing needs excluding: a series that appears or vanishes is a finding either way.
    """
    state = tmp_path / "state"
    gids = [f"OBSGID-{i:05d}-{os.urandom(4).hex()}" for i in range(10_000)]
    with running(state) as daemon:
        before = set(samples(scrape(daemon)))
        with Client(state, tracing=Tracing(None)) as client:
            job_ids = client.submit_many([{"agent": "echo", "gid": gid} for gid in gids]).job_ids
        wait_until(lambda: ledger_count(state) == 10_000, timeout=100, what="10,000 jobs", step=0.1)
        wait_until(
            lambda: daemon.metrics().get('swarmd_jobs_total{agent="echo",outcome="succeeded"}') == 10_000,
            what="the jobs counted",
        )
        text = scrape(daemon)
        assert daemon.stop() == 0
    after = samples(text)
    assert set(after) == before
    values = {value for _, labels in after for _, value in labels}
    assert values.isdisjoint(gids) and values.isdisjoint(job_ids)
    assert "OBSGID" not in text


# -- 5. spans, over OTLP/HTTP --------------------------------------------------------------
async def submit_to_the_queue(state: Path, jobs: list[Job]) -> None:
    """Store jobs as they are, past the client's checks, as a foreign producer could."""
    backend = open_backend(Settings(), state)
    await backend.open()
    try:
        await backend.submit(jobs)
    finally:
        await backend.close()


def test_spans_follow_each_job_from_producer_to_handler_and_into_the_logs(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with OtlpReceiver() as receiver:
        otel = {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "NO_PROXY": "127.0.0.1",
            "no_proxy": "127.0.0.1",
        }
        env = {**otel, "SWARMD_BACKOFF_BASE": "0.01"}

        def traced_submit(agent: str, gid: str, *extra: str, payload: Any = None) -> str:
            """The real CLI, with the OTEL_* environment: it exports its PRODUCER span."""
            args = ["submit", "--state-dir", str(state), "--agent", agent, "--gid", gid, "--json", *extra]
            if payload is not None:
                args += ["--payload", msgspec.json.encode(payload).decode()]
            return str(msgspec.json.decode(swarmd(*args, env=otel).stdout)["job_ids"][0])

        # Debug: a success logs `job_succeeded` only at debug, and every job must log a line.
        daemon = Daemon(state, "--agents", "support.agents", "--log-level", "debug", env=env).start()
        try:
            traced = traced_submit("traced", "GID-traced")
            echo = traced_submit("echo", "GID-echo", payload={"n": 1})
            flaky = traced_submit("flaky", "GID-flaky", payload={"fail_times": 1})
            failed = traced_submit("fail", "GID-fail", payload={"permanent": True})
            liar = traced_submit("liar", "GID-liar")
            # Written straight to the queue, as a foreign producer would: a traceparent that
            # is not one, and one that is well formed but all zeros (invalid by the W3C spec).
            malformed = ["garbage", f"00-{'0' * 32}-{'0' * 16}-01"]
            bad = [new_job(agent="echo", gid=f"GID-bad{i}", traceparent=tp) for i, tp in enumerate(malformed)]
            asyncio.run(submit_to_the_queue(state, bad))
            wait_until(lambda: ledger_count(state) == 7, what="every job")
            assert daemon.stop() == 0  # the drain flushes the daemon's spans
        finally:
            daemon.ensure_dead()
        wait_until(lambda: len(receiver.named("handler-work")) == 1, what="the handler's span")
        producers = receiver.named("send default")
        processes = receiver.named("process default")
        handler_spans = receiver.named("handler-work")
    log_text = daemon.log()

    entries = {entry["job_id"]: entry for entry in ledger(state)}
    jobs = [traced, echo, flaky, failed, liar]
    bad_ids = [job.id for job in bad]
    assert set(entries) == {*jobs, *bad_ids}
    assert entries[flaky]["attempt"] == 2

    # One PRODUCER span per CLI submit (each submitted one job), none for the raw writes.
    assert len(producers) == len(jobs)
    assert all(span.kind == Span.SPAN_KIND_PRODUCER for span in producers)
    assert all(
        attrs(span)
        == {"messaging.system": "swarmd", "messaging.operation.name": "send", "messaging.destination.name": "default"}
        for span in producers
    )
    producer_by_id = {span.span_id: span for span in producers}

    # One CONSUMER span per run: the flaky job ran twice.
    runs = Counter(attrs(span)["messaging.message.id"] for span in processes)
    assert dict(runs) == {job_id: entry["attempt"] for job_id, entry in entries.items()}
    spans_of: dict[str, list[Span]] = {}
    for span in sorted(processes, key=lambda s: attrs(s)["swarmd.job.attempt"]):
        spans_of.setdefault(attrs(span)["messaging.message.id"], []).append(span)
    parents: set[bytes] = set()
    for job_id in jobs:
        entry = entries[job_id]
        for attempt, span in enumerate(spans_of[job_id], start=1):
            assert span.kind == Span.SPAN_KIND_CONSUMER
            producer = producer_by_id[span.parent_span_id]  # child of a producer span...
            assert span.trace_id == producer.trace_id  # ...in its trace...
            assert [(link.trace_id, link.span_id) for link in span.links] == [(producer.trace_id, producer.span_id)]
            parents.add(span.parent_span_id)
            a = attrs(span)
            last = attempt == entry["attempt"]
            outcome = "failed" if not last or entry["outcome"] == "dead_lettered" else "succeeded"
            expected = {
                "messaging.system": "swarmd",
                "messaging.operation.name": "process",
                "messaging.destination.name": "default",
                "messaging.message.id": job_id,
                "swarmd.agent.gid": entry["gid"],
                "swarmd.agent.name": entry["agent"],
                "swarmd.job.attempt": attempt,
                "swarmd.job.outcome": outcome,
            }
            if outcome == "failed":
                expected["error.type"] = "RuntimeError" if job_id == flaky else entry["error"]["type"]
                assert span.status.code == Status.STATUS_CODE_ERROR
            else:
                assert span.status.code != Status.STATUS_CODE_ERROR
            assert a == expected
    # Each submit's producer span parents the runs of its own job, and only those.
    assert len(parents) == len(jobs)
    assert len({span.parent_span_id for span in spans_of[flaky]}) == 1  # both runs: one producer
    assert attrs(spans_of[failed][0])["error.type"] == "Permanent"

    # The identity violation is an event on the liar's span, and only there.
    events = {job_id: [event.name for span in spans for event in span.events] for job_id, spans in spans_of.items()}
    assert events[liar] == ["swarmd.identity_violation"]
    assert all("swarmd.identity_violation" not in names for job_id, names in events.items() if job_id != liar)

    # The handler's own span is a child of its job's process span.
    (traced_span,) = spans_of[traced]
    (work,) = handler_spans
    assert (work.trace_id, work.parent_span_id) == (traced_span.trace_id, traced_span.span_id)

    # A malformed traceparent: the job still ran, as the root of a fresh trace.
    producer_traces = {span.trace_id for span in producers}
    for job_id in bad_ids:
        (span,) = spans_of[job_id]
        assert entries[job_id]["outcome"] == "succeeded"
        assert span.parent_span_id == b"" and not span.links
        assert span.trace_id not in producer_traces
        assert [event.name for event in span.events] == ["swarmd.traceparent.malformed"]
    assert spans_of[bad_ids[0]][0].trace_id != spans_of[bad_ids[1]][0].trace_id

    # Log lines of a job carry its ids and the ids of the span they were written in.
    lines = [msgspec.json.decode(line) for line in log_text.splitlines() if line.strip()]
    span_by_ids = {(span.trace_id.hex(), span.span_id.hex()): span for span in [*processes, *handler_spans]}
    job_lines = [line for line in lines if "job_id" in line]
    assert {line["job_id"] for line in job_lines} == set(entries)
    for line in job_lines:
        entry = entries[line["job_id"]]
        assert (line["gid"], line["agent"]) == (entry["gid"], entry["agent"]), line
        span = span_by_ids[line["trace_id"], line["span_id"]]
        if span.name == "handler-work":
            assert line["event"] == "handler_line" and line["job_id"] == traced
        else:
            assert attrs(span)["messaging.message.id"] == line["job_id"]
            if "attempt" in line:
                assert attrs(span)["swarmd.job.attempt"] == line["attempt"]
    events_of = {(line["job_id"], line["event"]) for line in job_lines}
    assert {(traced, "handler_line"), (traced, "job_succeeded"), (flaky, "job_retry")} <= events_of
    assert (failed, "job_dead_lettered") in events_of and (liar, "identity_violation") in events_of


# -- 6. logs: JSON off a TTY, console on one, level changed by SIGHUP ---------------------
def test_log_lines_are_json_and_sighup_turns_on_debug(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = tmp_path / "swarmd.toml"
    config.write_text('log_level = "info"\n')
    with running(state, "--config", str(config)) as daemon:
        quiet = submit(state, "echo", "GID-quiet")
        wait_until(lambda: ledger_count(state) == 1, what="the first job")
        config.write_text('log_level = "debug"\n')
        daemon.signal(signal.SIGHUP)
        wait_until(lambda: '"reloaded"' in daemon.log(), what="the reload")
        loud = submit(state, "echo", "GID-loud")
        wait_until(lambda: loud[0] in daemon.log(), what="the debug line")
        assert daemon.stop() == 0
    lines = [msgspec.json.decode(line) for line in daemon.log().splitlines()]  # every line is JSON
    assert lines and all(isinstance(line, dict) and "timestamp" in line and "level" in line for line in lines)
    succeeded = [line for line in lines if line["event"] == "job_succeeded"]
    assert [(line["job_id"], line["level"], line["gid"]) for line in succeeded] == [(loud[0], "debug", "GID-loud")]
    assert not any(line.get("job_id") == quiet[0] for line in lines)
    (reloaded,) = [line for line in lines if line["event"] == "reloaded"]
    assert reloaded["log_level"] == "debug"


def test_log_lines_are_readable_console_output_on_a_tty(tmp_path: Path) -> None:
    port = free_port()
    controller, terminal = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "swarmd", "serve", "--state-dir", str(tmp_path / "state"),
         "--metrics-listen", f"127.0.0.1:{port}"],
        stdout=terminal, stderr=terminal, env=base_env(), cwd=REPO,
    )  # fmt: skip
    os.close(terminal)
    output = b""
    try:
        deadline = time.monotonic() + 30
        while b"started" not in output:
            assert time.monotonic() < deadline, f"no start-up line on the terminal: {output!r}"
            ready, _, _ = select.select([controller], [], [], 0.5)
            if ready:
                output += os.read(controller, 65536)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(10)
        os.close(controller)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", output.decode(errors="replace"))  # colours: it is a terminal
    line = next(raw for raw in plain.splitlines() if "started" in raw)
    assert not line.lstrip().startswith("{")
    assert "pid=" in line and f"listen=127.0.0.1:{port}" in line  # key=value pairs, the console renderer's
