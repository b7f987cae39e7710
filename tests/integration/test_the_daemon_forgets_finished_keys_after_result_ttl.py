"""A real daemon forgets a finished job's idempotency key ``result_ttl`` after the job ended,
on its own (its retention loop), and its /metrics say so: keys forgotten, passes that
succeeded, the state's size on disk and the live ledger's length. Within ``result_ttl`` the
key still names the first job; the first job's result stays readable (its ledger entry)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support.harness import running

from swarmd import Client
from swarmd.handles import JobHandle
from swarmd.testing.polling import wait_until

pytestmark = pytest.mark.slow


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match is not None, name
    return float(match.group(1))


def test_the_key_names_the_first_job_until_result_ttl_then_makes_a_new_one(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with (
        running(state, env={"SWARMD_RESULT_TTL": "2s"}) as daemon,
        Client(state) as client,
    ):
        first = client.submit("echo", gid="GID-k", payload={"n": 1}, idempotency_key="invoice-7")
        assert first.wait().outcome == "succeeded"
        again = client.submit("echo", gid="GID-k", payload={"n": 1}, idempotency_key="invoice-7")
        assert again == first, "within result_ttl the key names the first job"

        def resubmitted() -> JobHandle | None:
            job = client.submit("echo", gid="GID-k", payload={"n": 1}, idempotency_key="invoice-7")
            return None if job == first else job

        fresh = wait_until(resubmitted, timeout=30, what="the key to expire", step=0.1)
        assert fresh is not None
        assert fresh.wait().outcome == "succeeded"
        assert client.status(first).outcome == "succeeded", "the first job's ledger entry stays"

        def forgotten() -> str | None:
            status, text = daemon.get("/metrics")
            return text if status == 200 and _metric(text, "swarmd_ledger_entries") == 2 else None

        text = wait_until(forgotten, timeout=30, what="the metrics to show both entries")
        assert text is not None
    assert _metric(text, "swarmd_finished_expired_total") >= 1
    assert _metric(text, 'swarmd_retention_runs_total{result="ok"}') >= 1
    assert _metric(text, 'swarmd_state_bytes{part="database"}') > 0
    assert _metric(text, "swarmd_state_filesystem_free_bytes") > 0
    assert _metric(text, "swarmd_ledger_oldest_timestamp_seconds") > 0
