"""Issue 16: the trace of a pipeline is one trace — a parent, its children, the follow-up of
their swarm, that follow-up's own swarm and follow-up — as a real daemon exports it over
OTLP/HTTP to a receiver on 127.0.0.1, with no tracing producer at all (the CLI submits)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from support.harness import Daemon, ledger, ledger_count, swarmd, wait_until
from support.otlp import OtlpReceiver, attrs

pytestmark = pytest.mark.slow


def exporting_to(receiver: OtlpReceiver) -> dict[str, str]:
    """A daemon's environment that exports its spans to ``receiver`` at once."""
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
    }


def test_a_three_stage_pipeline_arrives_as_one_trace(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with OtlpReceiver() as receiver:
        env = exporting_to(receiver)
        stage3 = {"agent": "aggregate", "gid": "GID-3"}
        stage2 = {"agent": "fan_out", "gid": "GID-2", "payload": {"width": 2, "then": stage3}}
        payload = {"width": 3, "then": stage2}
        with Daemon(state, "--agents", "support.agents", env=env):
            submitted = swarmd(
                "submit", "--state-dir", str(state), "--agent", "fan_out", "--gid", "GID-1", "--json",
                "--payload", msgspec.json.encode(payload).decode(),
            )  # fmt: skip
            root = str(msgspec.json.decode(submitted.stdout)["job_ids"][0])
            # the root, its 3 children, their follow-up, its 2 children, and theirs
            wait_until(lambda: ledger_count(state) == 1 + 3 + 1 + 2 + 1, what="every stage of the pipeline")
        entries = {entry["job_id"]: entry for entry in ledger(state)}
        wait_until(lambda: len(receiver.named("process default")) == len(entries), what="every process span")
    processes = receiver.named("process default")
    by_job = {attrs(span)["messaging.message.id"]: span for span in processes}
    assert set(by_job) == set(entries)
    assert {span.trace_id for span in processes} == {by_job[root].trace_id}  # one trace
    # Each child's process span hangs under a send span whose parent is its parent's process span.
    sends = {span.span_id: span for span in receiver.named("send default")}
    for job_id, entry in entries.items():
        parent = entry.get("parent_id")
        if parent is None:
            assert job_id == root
            continue
        send = sends[by_job[job_id].parent_span_id]
        assert send.parent_span_id == by_job[parent].span_id, job_id
    follow_ups = [job_id for job_id, entry in entries.items() if entry.get("follows")]
    assert len(follow_ups) == 2
    assert all(entries[job_id]["outcome"] == "succeeded" for job_id in entries)


def test_a_cli_swarm_and_its_follow_up_are_one_trace_under_the_daemons_swarm_span(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with OtlpReceiver() as receiver:
        env = exporting_to(receiver)
        with Daemon(state, "--agents", "support.agents", env=env):
            submitted = swarmd(
                "submit", "--state-dir", str(state), "--agent", "echo", "--gid", "GID-1", "--count", "5",
                "--swarm", "--then", "aggregate", "--json",
            )  # fmt: skip
            shown = msgspec.json.decode(submitted.stdout)
            wait_until(lambda: ledger_count(state) == 6, what="the swarm and its follow-up")
        wait_until(lambda: len(receiver.named("process default")) == 6, what="every process span")
        wait_until(lambda: len(receiver.named("swarm default")) == 1, what="the swarm span")
    (swarm_span,) = receiver.named("swarm default")
    by_job = {attrs(span)["messaging.message.id"]: span for span in receiver.named("process default")}
    assert set(by_job) == {*shown["job_ids"], shown["follow_up"]}
    assert attrs(swarm_span)["swarmd.swarm.id"] == shown["swarm_id"]
    for span in by_job.values():  # members and follow-up alike hang under the one swarm span
        assert (span.trace_id, span.parent_span_id) == (swarm_span.trace_id, swarm_span.span_id)
