"""`swarmd ledger export | head -1` and the like: when the reader of stdout goes away, the command
stops at once, quietly (no BrokenPipeError traceback), with the status a shell expects of a
command killed by SIGPIPE (141)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support.harness import base_env, swarmd

pytestmark = pytest.mark.slow

JOBS = 3000  # several pipe buffers (64 KiB) of output for each command below


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state with JOBS queued jobs and, once half of them are cancelled, JOBS / 2 ledger entries."""
    state = tmp_path_factory.mktemp("pipe") / "state"
    common = ("--state-dir", str(state))
    swarmd("submit", *common, "--agent", "echo", "--gid", "G-1", "--count", str(JOBS // 2))
    swarmd("cancel", *common, "--all", "--yes")
    swarmd("submit", *common, "--agent", "echo", "--gid", "G-1", "--count", str(JOBS // 2))
    return state


@pytest.mark.parametrize(
    "command",
    [
        ["ledger", "export"],
        ["ledger", "tail", "-n", "100000"],
        ["jobs", "--limit", str(JOBS)],
        ["ledger", "tail", "-n", "100000", "--json"],
    ],
)
def test_a_closed_pipe_ends_the_command_quietly(state: Path, command: list[str]) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "swarmd", *command, "--state-dir", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=base_env(),
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline().strip()
        proc.stdout.close()  # `head -1` has what it wanted
        err = proc.stderr.read().decode()
        status = proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert (status, err) == (141, "")
