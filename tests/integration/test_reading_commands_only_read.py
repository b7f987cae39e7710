"""Commands that only read (status, jobs, the ledger, the dead-letter list) open the state
read-only: they create nothing where there is no state, and they work on a copy nobody may
write, such as an auditor's copy of the ledger."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.harness import base_env, ledger_count, running, submit, swarmd, wait_until
from support.services import require_tool

READING = [["status", "J1"], ["jobs"], ["ledger", "verify"], ["ledger", "export"], ["ledger", "tail"], ["dlq", "list"]]


@pytest.mark.parametrize("command", READING, ids="-".join)
def test_a_mistyped_state_dir_is_an_error_and_nothing_is_created(tmp_path: Path, command: list[str]) -> None:
    typo = tmp_path / "typo"
    result = swarmd(*command, "--state-dir", str(typo), check=False)
    assert result.returncode == 2, result.stderr
    assert "holds no swarmd state" in result.stderr
    assert not typo.exists()


@pytest.fixture
def auditors_copy(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """A finished state, copied to a directory and file no one but root may write."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make a copy an unprivileged user can read but not write")
    state = tmp_path / "state"
    jobs = submit(state, "echo", "G1", payload={"n": 1}, count=3)
    with running(state):
        wait_until(lambda: ledger_count(state) == 3, what="the jobs to finish")
    outer = Path(tempfile.mkdtemp(prefix="swarmd-audit-"))
    try:
        outer.chmod(0o755)
        copy = outer / "copy"
        copy.mkdir()
        with sqlite3.connect(state / "swarmd.db") as live, sqlite3.connect(copy / "swarmd.db") as backup:
            live.backup(backup)  # as `sqlite3 swarmd.db '.backup copy.db'` copies a live state
        (copy / "swarmd.db").chmod(0o444)
        copy.chmod(0o555)
        yield copy, jobs
    finally:
        shutil.rmtree(outer)


def _as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    require_tool("setpriv")
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "swarmd", *args],
        capture_output=True, text=True, env=base_env({"HOME": "/tmp"}), timeout=60, check=False,
    )  # fmt: skip


def test_reading_commands_work_on_a_copy_nobody_may_write(auditors_copy: tuple[Path, list[str]]) -> None:
    copy, jobs = auditors_copy
    before = sorted(path.name for path in copy.iterdir())
    verify = _as_nobody("ledger", "verify", "--state-dir", str(copy))
    assert verify.returncode == 0, verify.stderr
    assert "ledger ok: 3 entries" in verify.stdout
    status = _as_nobody("status", "--json", "--state-dir", str(copy), jobs[0])
    assert status.returncode == 0, status.stderr
    assert '"outcome":"succeeded"' in status.stdout.replace(" ", "")
    export = _as_nobody("ledger", "export", "--state-dir", str(copy))
    assert export.returncode == 0 and len(export.stdout.splitlines()) == 3, export.stderr
    jobs_listing = _as_nobody("jobs", "--state-dir", str(copy))
    assert jobs_listing.returncode == 0, jobs_listing.stderr
    assert sorted(path.name for path in copy.iterdir()) == before  # nothing created beside it


def test_a_write_to_a_read_only_copy_is_a_clear_error(auditors_copy: tuple[Path, list[str]]) -> None:
    copy, _ = auditors_copy
    result = _as_nobody("submit", "--agent", "echo", "--gid", "G1", "--state-dir", str(copy))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert str(copy) in result.stderr
