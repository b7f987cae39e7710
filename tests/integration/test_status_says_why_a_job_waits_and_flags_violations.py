"""`status` and `jobs` say why a ready job is not starting (its agent's circuit is open, or no
daemon here loads it), and flag a finished job that broke the identity check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
from support.harness import ledger_count, running, submit, swarmd, wait_until

pytestmark = pytest.mark.slow


def _status(state: Path, job_id: str) -> dict[str, Any]:
    out = swarmd("status", "--state-dir", str(state), "--json", job_id).stdout
    return dict(msgspec.json.decode(out))


def test_a_job_held_back_by_an_open_circuit_says_so(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {"SWARMD_BREAKER_FAILURES": "2", "SWARMD_BREAKER_COOLDOWN": "600", "SWARMD_MAX_ATTEMPTS": "1"}
    with running(state, env=env):
        submit(state, "fail", "GID-f", count=2)
        wait_until(lambda: ledger_count(state) == 2, what="two failures to open the circuit")
        [held] = submit(state, "fail", "GID-f")
        [free] = submit(state, "echo", "GID-e")
        wait_until(lambda: _status(state, free)["state"] == "done", what="the echo job")
        wait_until(lambda: _status(state, held).get("waiting"), what="the hold to be published")
        info = _status(state, held)
        assert info["state"] == "ready"
        assert info["waiting"].startswith("circuit open (the agent keeps failing): next trial at")
        plain = swarmd("jobs", "--state-dir", str(state), "--state", "ready").stdout
        assert f"{held}" in plain and "waiting: circuit open" in plain
        assert _status(state, free).get("waiting") is None


def test_a_job_that_broke_the_identity_check_is_flagged(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with running(state, "--agents", "support.agents"):
        [liar] = submit(state, "liar", "GID-l")
        [honest] = submit(state, "echo", "GID-h")
        wait_until(lambda: ledger_count(state) == 2, what="both jobs")
    info = _status(state, liar)
    assert info["outcome"] == "succeeded" and info["identity_violation"]
    assert _status(state, honest)["identity_violation"] is None
    plain = swarmd("status", "--state-dir", str(state), liar).stdout
    assert "IDENTITY VIOLATION" in plain
