"""Long operations (`ledger verify`, `ledger export`, `submit --count`) show a counter on stderr
when stderr is a terminal, rewritten in place, and then a one-line summary for a submit; with
stderr not a terminal (a pipe, a log) they write no progress at all, and stdout is the same."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from support.harness import base_env, swarmd

pytestmark = pytest.mark.slow

ENTRIES = 1200


def _run(*args: str, terminal: bool) -> tuple[int, str, str]:
    """Run the CLI with stdout piped and stderr a pseudo-terminal (``terminal``) or a pipe."""
    command = [sys.executable, "-m", "swarmd", *args]
    if not terminal:
        result = subprocess.run(command, capture_output=True, text=True, env=base_env(), timeout=120, check=False)
        return result.returncode, result.stdout, result.stderr
    leader, follower = pty.openpty()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=follower, env=base_env()) as proc:
        os.close(follower)
        assert proc.stdout is not None
        out = proc.stdout.read().decode()  # stderr is small: the terminal's buffer holds it meanwhile
        err = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            err += chunk
        os.close(leader)
        status = proc.wait(timeout=120)
    return status, out, err.decode()


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("progress") / "state"
    swarmd("submit", "--state-dir", str(state), "--agent", "echo", "--gid", "G-1", "--count", str(ENTRIES))
    swarmd("cancel", "--state-dir", str(state), "--all", "--yes")
    return state


@pytest.mark.parametrize(
    ("command", "counter"),
    [
        (["ledger", "verify"], f"\rverifying entries: {ENTRIES}/{ENTRIES}"),
        (["ledger", "export"], f"\rexporting entries: 1/{ENTRIES}"),
    ],
)
def test_a_long_read_counts_on_a_terminal_and_is_silent_in_a_pipe(
    state: Path, command: list[str], counter: str
) -> None:
    args = [*command, "--state-dir", str(state)]
    status, out, err = _run(*args, terminal=True)
    assert status == 0 and counter in err, repr(err)
    assert err.endswith("\r\x1b[K")  # the counter's line is wiped at the end
    piped_status, piped_out, piped_err = _run(*args, terminal=False)
    assert (piped_status, piped_out, piped_err) == (0, out, "")


def test_a_large_submit_shows_it_is_under_way_and_sums_up_on_a_terminal_only(tmp_path: Path) -> None:
    args = ["submit", "--state-dir", str(tmp_path / "state"), "--agent", "echo", "--gid", "G-1", "--count", "2000"]
    args += ["--swarm"]
    status, out, err = _run(*args, terminal=True)
    assert status == 0 and len(out.splitlines()) == 2000
    assert "\rsubmitting 2000 jobs …" in err
    [summary] = [line for line in err.replace("\r\x1b[K", "\n").splitlines() if line.startswith("submitted")]
    assert summary.startswith("submitted 2000 jobs (swarm ") and summary.endswith(" s")
    status, out, err = _run(*args, terminal=False)
    assert status == 0 and len(out.splitlines()) == 2000
    assert "submitt" not in err and "\r" not in err and err.startswith("swarm: ")


def test_bench_says_which_scenario_runs_on_a_terminal_only() -> None:
    args = ("bench", "swarm", "--agents", "5", "--repeat", "1")
    status, out, err = _run(*args, terminal=True)
    assert status == 0, err
    assert "\r\x1b[Kbench: running swarm (1 of 1) ..." in err
    status, piped_out, piped_err = _run(*args, terminal=False)
    assert status == 0 and "bench: running" not in piped_err
    assert "swarm" in out and "swarm" in piped_out
