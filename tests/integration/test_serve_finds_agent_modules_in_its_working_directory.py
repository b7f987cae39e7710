"""`swarmd serve --agents myagents`, run beside ``myagents.py``, serves its agents (as README
says), but never imports from a working directory that is the state directory or that others
may write to; ``--agents-path`` names directories searched first.

The daemon is started as an operator starts it, through the installed ``swarmd`` script:
``python -m swarmd`` would put the working directory on ``sys.path`` itself, before swarmd runs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from support.harness import Daemon, ledger, ledger_count, submit, wait_until
from support.paths import REPO

#: The installed command (the console script of this environment's swarmd).
SWARMD_SCRIPT = Path(sys.executable).parent / "swarmd"


def readme_agents_module() -> str:
    """The ``myagents.py`` of README's "Writing agents" section, as a user would copy it."""
    text = (REPO / "README.md").read_text()
    start = text.index("```python\n# myagents.py\n") + len("```python\n")
    return text[start : text.index("```", start)]


class InstalledDaemon(Daemon):
    """`swarmd serve` through the ``swarmd`` script rather than ``python -m swarmd``."""

    def command(self) -> list[str]:
        command = super().command()
        assert command[1:3] == ["-m", "swarmd"], command
        return [str(SWARMD_SCRIPT), *command[3:]]


@pytest.fixture(autouse=True)
def _installed() -> None:
    assert SWARMD_SCRIPT.exists(), f"{SWARMD_SCRIPT} missing: install swarmd in this environment (pip install -e .)"


def project(directory: Path, mode: int = 0o700) -> Path:
    """A user's project directory holding README's ``myagents.py``, with ``mode``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "myagents.py").write_text(readme_agents_module())
    os.chmod(directory, mode)
    return directory


def run_summarize(state_dir: Path) -> dict[str, object]:
    """Submit one job of README's ``summarize`` agent and return its ledger entry."""
    submit(state_dir, "summarize", "GID-01", payload={"url": "https://example.org"})
    wait_until(lambda: ledger_count(state_dir) == 1, timeout=30, what="the summarize job's ledger entry")
    (entry,) = ledger(state_dir)
    return entry


def refused(daemon: Daemon) -> str:
    """Start a daemon that must refuse to start; its log."""
    daemon.start(wait_ready=False)
    try:
        assert daemon.wait(30) == 2, daemon.log()
    finally:
        daemon.ensure_dead()
    return daemon.log()


def test_serve_imports_the_agent_module_beside_it_and_runs_its_job(tmp_path: Path) -> None:
    here = project(tmp_path / "project")
    state_dir = tmp_path / "state"
    with InstalledDaemon(state_dir, "--agents", "myagents", cwd=here) as daemon:
        entry = run_summarize(state_dir)
        assert entry["outcome"] == "succeeded", entry
        assert entry["result"] == {"agent_gid": "GID-01", "summary": "..."}
        assert str(here) not in daemon.log()  # no complaint about the directory


def test_a_working_directory_others_can_write_to_is_not_searched(tmp_path: Path) -> None:
    here = project(tmp_path / "shared", mode=0o770)
    log = refused(InstalledDaemon(tmp_path / "state", "--agents", "myagents", cwd=here))
    assert "cannot import agent module 'myagents': not found" in log
    assert f"skipped the working directory {here}: it is writable by group or others (mode 0770)" in log


def test_the_state_directory_as_working_directory_is_not_searched(tmp_path: Path) -> None:
    state_dir = project(tmp_path / "state")  # as under systemd: WorkingDirectory is the state dir
    log = refused(InstalledDaemon(state_dir, "--agents", "myagents", cwd=state_dir))
    assert f"skipped the working directory {state_dir}: it is the state directory" in log


def test_agents_path_is_searched_first(tmp_path: Path) -> None:
    modules = project(tmp_path / "agents")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o777)
    os.chmod(elsewhere, 0o777)  # not searched itself: the module comes from agents_path
    state_dir = tmp_path / "state"
    with InstalledDaemon(state_dir, "--agents", "myagents", "--agents-path", str(modules), cwd=elsewhere):
        assert run_summarize(state_dir)["outcome"] == "succeeded"


def test_an_agents_path_that_is_no_directory_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    log = refused(InstalledDaemon(tmp_path / "state", "--agents-path", str(missing), cwd=tmp_path))
    assert f"agents_path: {missing} is not a directory" in log


def test_python_m_swarmd_does_not_search_an_untrusted_working_directory_either(tmp_path: Path) -> None:
    """``python -m`` puts the working directory on sys.path before swarmd runs; swarmd takes it
    off again, so the checks hold however the daemon was started."""
    here = project(tmp_path / "shared", mode=0o770)
    log = refused(Daemon(tmp_path / "state", "--agents", "myagents", cwd=here))
    assert "cannot import agent module 'myagents': not found" in log
    assert f"skipped the working directory {here}" in log
