"""A daemon restarted without the module of an agent an earlier daemon served keeps that
agent's queued jobs (counted in swarmd_jobs_unroutable), runs everything else, and a restart
with the module runs them; a job for an agent no daemon ever served is still refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.harness import ledger, ledger_count, queue_states, running, submit, swarmd, wait_until

pytestmark = pytest.mark.slow


def test_jobs_of_an_agent_this_daemon_does_not_load_wait_for_one_that_does(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with running(state, "--agents", "support.agents"):
        pass  # publishes the agents of support.agents, "slow" among them
    kept = submit(state, "slow", "GID-k", payload={"seconds": 0}, count=3)
    with running(state) as daemon:  # restarted without the module
        others = submit(state, "echo", "GID-e", count=2)
        wait_until(lambda: ledger_count(state) == 2, what="the echo jobs")
        wait_until(lambda: daemon.metrics().get("swarmd_jobs_unroutable") == 3, what="the gauge of kept jobs")
        assert queue_states(state) == {"ready": 3}
        assert "agent_unroutable" in daemon.log()
        wait_until(
            lambda: (
                swarmd("jobs", "--state-dir", str(state), "--agent", "slow").stdout.count("waiting for a daemon") == 3
            ),
            what="the hold on the kept jobs",
        )
        assert daemon.metrics()['swarmd_rejected_jobs_total{reason="unknown_agent"}'] == 0
    with running(state, "--agents", "support.agents"):  # the fixed restart
        wait_until(lambda: ledger_count(state) == 5, what="the kept jobs to run")
    outcomes = {entry["job_id"]: (entry["outcome"], entry["attempt"]) for entry in ledger(state)}
    assert {outcomes[job] for job in kept} == {("succeeded", 1)}  # not one attempt spent while kept
    assert {outcomes[job][0] for job in others} == {"succeeded"}
