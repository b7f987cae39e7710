"""A state directory is treated as hostile: a symlink planted in it is never followed, another
user's directory is refused, one open to others is tightened before it is used, and the lock
holds even when its file is deleted."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.harness import base_env, free_port, running, submit, swarmd
from support.services import require_tool

from swarmd import Client, StateDirError


@pytest.fixture
def open_state(tmp_path: Path) -> Path:
    """A state directory anyone may write in, as `mkdir -m 0777` makes it."""
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o777)
    return state


def test_a_symlinked_lock_file_is_refused_and_its_target_untouched(open_state: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (open_state / "swarmd.lock").symlink_to(victim)
    result = swarmd(
        "serve", "--state-dir", str(open_state), "--metrics-listen", f"127.0.0.1:{free_port()}", check=False
    )
    assert result.returncode == 2, result.stderr
    assert "swarmd.lock is a symlink" in result.stderr
    assert victim.read_text() == "precious\n"


def test_a_dangling_database_symlink_creates_nothing_at_its_target(open_state: Path, tmp_path: Path) -> None:
    target = tmp_path / "attacker" / "swarmd.db"
    target.parent.mkdir()
    (open_state / "swarmd.db").symlink_to(target)
    result = swarmd("submit", "--state-dir", str(open_state), "--agent", "echo", "--gid", "G1", check=False)
    assert result.returncode == 2, result.stderr
    assert "swarmd.db is a symlink" in result.stderr
    assert not target.exists()
    with pytest.raises(StateDirError, match="symlink"), Client(open_state):
        pass


def test_an_open_directory_of_ours_is_tightened_and_its_database_made_private(open_state: Path) -> None:
    database = open_state / "swarmd.db"
    with Client(open_state) as client:
        client.submit("echo", gid="G1")
    database.chmod(0o666)
    open_state.chmod(0o777)
    with running(open_state):
        assert stat.S_IMODE(open_state.stat().st_mode) == 0o700
        assert stat.S_IMODE(database.stat().st_mode) == 0o600


def test_deleting_the_lock_file_does_not_let_a_second_daemon_in(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with running(state) as first:
        (state / "swarmd.lock").unlink()
        result = swarmd("serve", "--state-dir", str(state), "--metrics-listen", f"127.0.0.1:{free_port()}", check=False)
        assert result.returncode == 1, result.stderr
        assert "in use by a running daemon" in result.stderr
        assert first.proc is not None and first.proc.poll() is None


@pytest.fixture
def roots_open_directory() -> Iterator[Path]:
    """A directory root owns that anyone may write in, reachable by an unprivileged user."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make a directory of another user's")
    outer = Path(tempfile.mkdtemp(prefix="swarmd-test-"))
    try:
        outer.chmod(0o755)
        state = outer / "state"
        state.mkdir()
        state.chmod(0o777)
        yield state
    finally:
        shutil.rmtree(outer)


def test_another_users_directory_is_refused_even_when_writable(roots_open_directory: Path) -> None:
    require_tool("setpriv")
    state = roots_open_directory
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "swarmd",
         "submit", "--state-dir", str(state), "--agent", "echo", "--gid", "G1"],
        capture_output=True, text=True, env=base_env({"HOME": "/tmp"}), timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "belongs to uid 0, not to this user (uid 65534)" in result.stderr
    assert list(state.iterdir()) == []


def test_root_may_use_another_users_directory(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root may use another user's state directory")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, 65534, 65534)
    assert submit(state, "echo", "G1")
