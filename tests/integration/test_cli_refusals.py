"""`swarmd submit` and `swarmd serve` refuse what they cannot honour: clearly, on stderr, with
exit status 2 (1 for a state directory in use), and before writing anything.

Bad submits, bad config files, a state directory that is not a writable directory, a listener
address in use or off loopback, a second daemon on the same state directory.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from support.harness import base_env, free_port, ledger_count, queue_states, running, swarmd

pytestmark = pytest.mark.slow


def _nothing_written(state: Path) -> None:
    if (state / "swarmd.db").exists():
        assert queue_states(state) == {}
        assert ledger_count(state) == 0


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["--agent", "echo", "--gid", "G", "--payload", "{bad"], None, "payload: malformed JSON"),
        (["--agent", "nope", "--gid", "G"], None, "unknown agent 'nope'"),
        (
            ["--agent", "echo", "--gid", "G", "--payload-file", "-"],
            b'"' + b"x" * (1024 * 1024 + 10) + b'"',
            "over the limit",
        ),
        (["--agent", "echo", "--gid", "bad gid!"], None, "invalid job: gid"),
        (["--agent", "echo", "--gid", "G", "--priority", "1000"], None, "invalid job: priority"),
        (["--agent", "echo", "--gid", "G", "--payload", "[" * 100 + "]" * 100], None, "nested deeper"),
        (["--agent", "echo", "--gid", "G", "--fail-fast"], None, "--fail-fast needs --swarm"),
    ],
    ids=["malformed-json", "unknown-agent", "oversized", "bad-gid", "bad-priority", "too-deep", "fail-fast-alone"],
)
def test_bad_submits_are_refused_clearly_and_write_nothing(
    tmp_path: Path, args: list[str], stdin: bytes | None, message: str
) -> None:
    state = tmp_path / "state"
    result = swarmd("submit", "--state-dir", str(state), *args, check=False, input=stdin)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("swarmd: error: ")
    assert message in result.stderr
    _nothing_written(state)


def test_bad_config_files_are_refused_naming_the_key(tmp_path: Path) -> None:
    state = tmp_path / "state"
    missing = swarmd("serve", "--state-dir", str(state), "--config", str(tmp_path / "nope.toml"), check=False)
    assert missing.returncode == 2 and "file not found" in missing.stderr
    bad_value = tmp_path / "bad.toml"
    bad_value.write_text('max_concurrent = "many"\n')
    result = swarmd("serve", "--state-dir", str(state), "--config", str(bad_value), check=False)
    assert result.returncode == 2 and "max_concurrent" in result.stderr and str(bad_value) in result.stderr
    typo = tmp_path / "typo.toml"
    typo.write_text("max_concurent = 3\n")
    result = swarmd("serve", "--state-dir", str(state), "--config", str(typo), check=False)
    assert result.returncode == 2 and "max_concurent: unknown key" in result.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text("max_concurrent = \n")
    result = swarmd("serve", "--state-dir", str(state), "--config", str(broken), check=False)
    assert result.returncode == 2 and "not valid TOML" in result.stderr
    unreadable = tmp_path / "dir.toml"
    unreadable.mkdir()
    result = swarmd("serve", "--state-dir", str(state), "--config", str(unreadable), check=False)
    assert result.returncode == 2 and "is a directory" in result.stderr
    assert not state.exists()  # refused before anything was created


def test_state_directory_not_writable_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = swarmd("serve", "--state-dir", str(blocker / "state"), check=False)
    assert result.returncode == 2 and "state directory" in result.stderr
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        result = swarmd("serve", "--state-dir", str(locked), check=False)
    else:
        # root writes anywhere: prove the check as an unprivileged user, in a directory it can reach.
        outer = Path(tempfile.mkdtemp(prefix="swarmd-test-"))
        try:
            outer.chmod(0o755)
            locked = outer / "locked"
            locked.mkdir(mode=0o555)
            result = swarmd_as_nobody("serve", "--state-dir", str(locked))
        finally:
            shutil.rmtree(outer)
    assert result.returncode == 2, result.stderr
    assert f"state directory {locked}: is not writable" in result.stderr


def swarmd_as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "swarmd", *args],
        capture_output=True,
        text=True,
        env=base_env({"HOME": "/tmp"}),
        timeout=60,
        check=False,
    )


def test_listener_address_in_use_is_refused(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = swarmd(
            "serve", "--state-dir", str(tmp_path / "s"), "--metrics-listen", f"127.0.0.1:{port}", check=False
        )
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_non_loopback_listener_needs_the_explicit_flag(tmp_path: Path) -> None:
    result = swarmd("serve", "--state-dir", str(tmp_path / "s"), "--metrics-listen", "0.0.0.0:9999", check=False)
    assert result.returncode == 2 and "allow-remote-metrics" in result.stderr


def test_a_second_daemon_on_the_same_state_is_refused_naming_the_holder(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with running(state) as first:
        result = swarmd("serve", "--state-dir", str(state), "--metrics-listen", f"127.0.0.1:{free_port()}", check=False)
        assert result.returncode == 1
        assert f"in use by a running daemon (pid {first.pid})" in result.stderr
