"""`swarmd submit --wait`, `swarmd result`, `swarmd wait --swarm` and `swarmd status` print
results and errors (with tracebacks) and exit 0 (all succeeded), 1 (one did not) or 124 (time
out), on both backends, against a real daemon, through the real CLI."""

from __future__ import annotations

import json

import pytest
from support.harness import swarmd
from support.stacks import Stack, stack

pytestmark = pytest.mark.slow
__all__ = ["stack"]  # the fixture, on both backends


def test_submit_wait_prints_results_and_exits_by_outcome(stack: Stack) -> None:
    common = stack.cli_args()
    with stack.daemon():
        ok = swarmd("submit", *common, "--agent", "echo", "--gid", "G1", "--payload", '{"a": 1}', "--wait")
        [line] = ok.stdout.splitlines()
        assert line.split()[1:] == ["succeeded", '{"a":1}']
        as_json = swarmd("submit", *common, "--agent", "echo", "--gid", "G1", "--count", "3", "--wait", "--json")
        results = json.loads(as_json.stdout)
        assert [r["outcome"] for r in results] == ["succeeded"] * 3 and results[0]["attempts"] == 1
        failed = swarmd("submit", *common, "--agent", "raises_deep", "--gid", "G2", "--wait", "--json", check=False)
        assert failed.returncode == 1
        [result] = json.loads(failed.stdout)
        assert result["error"]["type"] == "ValueError" and "in _innermost" in result["error"]["traceback"]
        slow = ["--agent", "slow", "--gid", "G3", "--payload", '{"seconds": 3600}', "--wait", "--wait-timeout", "0.3"]
        timed_out = swarmd("submit", *common, *slow, check=False)
        assert timed_out.returncode == 124 and "no outcome after 0.3s" in timed_out.stderr
        # left running, the hour-long job would hold the daemon's stop for its whole grace period
        swarmd("cancel", *common, "--agent", "slow", "--yes")


def test_result_and_status_show_the_result_or_the_traceback(stack: Stack) -> None:
    common = stack.cli_args()
    with stack.daemon():
        [ok] = swarmd("submit", *common, "--agent", "echo", "--gid", "G1", "--payload", '{"b": 2}').stdout.split()
        [bad] = swarmd("submit", *common, "--agent", "raises_deep", "--gid", "G2").stdout.split()
        long = ("--agent", "slow", "--gid", "G3", "--payload", '{"seconds": 3600}')
        [slow] = swarmd("submit", *common, *long).stdout.split()
        assert swarmd("result", *common, ok, "--wait", "--timeout", "30").stdout == '{"b":2}\n'
        failed = swarmd("result", *common, bad, "--wait", "--timeout", "30", check=False)
        assert failed.returncode == 1 and "ValueError: deep failure of G2" in failed.stdout
        assert "in _innermost" in failed.stdout
        unfinished = swarmd("result", *common, slow, check=False)
        assert unfinished.returncode == 1 and "has not finished" in unfinished.stderr
        assert swarmd("result", *common, slow, "--wait", "--timeout", "0.2", check=False).returncode == 124
        status = swarmd("status", *common, ok).stdout
        assert '  result: {"b":2}' in status.splitlines()
        status_bad = swarmd("status", *common, bad).stdout
        assert "ValueError: deep failure of G2" in status_bad and "in _innermost" in status_bad
        as_json = json.loads(swarmd("status", *common, bad, "--json").stdout)
        assert "in _innermost" in as_json["error"]["traceback"]
        [letter] = json.loads(swarmd("dlq", "list", *common, "--json").stdout)
        assert letter["error"] == as_json["error"]
        swarmd("cancel", *common, slow)


def test_wait_swarm_prints_members_in_submit_order_and_exits_1_on_a_fail_fast_failure(stack: Stack) -> None:
    common = stack.cli_args()
    with stack.daemon():
        submitted = swarmd(
            "submit", *common, "--agent", "permanent", "--gid", "G", "--count", "3", "--swarm", "--fail-fast"
        )
        ids = submitted.stdout.split()
        swarm_id = submitted.stderr.split("swarm: ")[1].split()[0]
        waited = swarmd("wait", *common, "--swarm", swarm_id, "--timeout", "30", check=False)
        assert waited.returncode == 1
        lines = waited.stdout.splitlines()
        assert [line.split()[0] for line in lines] == ids
        assert "dead_lettered" in {line.split()[1] for line in lines}
        ok = swarmd("submit", *common, "--agent", "echo", "--gid", "G", "--count", "2", "--swarm")
        ok_swarm = ok.stderr.split("swarm: ")[1].split()[0]
        assert swarmd("wait", *common, "--swarm", ok_swarm, "--timeout", "30").returncode == 0
