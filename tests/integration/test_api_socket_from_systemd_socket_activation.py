"""Under the shipped units, systemd (swarmd.socket) creates the API socket with its group and
mode and passes it to the daemon (LISTEN_FDS): the daemon serves that socket as it is, and
leaves the file in place when it stops. Re-created here by handing a real daemon a listening
socket on fd 3, as systemd does. And the unit's PrivateUsers=yes, re-created with unshare: a
daemon there refuses an [api.allow] table it could not apply."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import msgspec
import pytest
from support.api import NOBODY, open_directory, require_root, swarmd_as, throwaway_group
from support.harness import base_env, free_port, ledger, ledger_count, wait_until
from support.services import require_tool

from swarmd.runtime.api_server import sees_real_uids

pytestmark = pytest.mark.slow


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def test_the_daemon_serves_the_socket_systemd_passes_and_leaves_it_in_place(tmp_path: Path) -> None:
    require_root()
    state, port = tmp_path / "state", free_port()
    with throwaway_group() as (group, gid), open_directory() as run_dir:
        path = run_dir / "swarmd.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        os.chown(path, -1, gid)
        os.chmod(path, 0o660)  # as SocketGroup= and SocketMode= make it
        listener.listen(16)
        fd = listener.fileno()
        serve = [sys.executable, "-m", "swarmd", "serve", "--state-dir", str(state),
                 "--metrics-listen", f"127.0.0.1:{port}", "--agents", "support.agents"]  # fmt: skip
        script = f'exec 3<&{fd}; export LISTEN_PID=$$ LISTEN_FDS=1; exec "$@"'
        env = base_env({"SWARMD_API_SOCKET": str(run_dir / "elsewhere.sock")})  # the passed socket wins
        with (tmp_path / "daemon.log").open("wb") as log:
            daemon = subprocess.Popen(
                ["bash", "-c", script, "bash", *serve], pass_fds=(fd,), env=env, stdout=log, stderr=subprocess.STDOUT
            )
        listener.close()
        try:
            wait_until(lambda: _ready(port) or daemon.poll() is not None, what="the daemon ready")
            assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()
            submitted = swarmd_as(
                NOBODY, [gid], "submit", "--socket", str(path), "--agent", "echo", "--gid", "GID-7", "--json"
            )
            assert submitted.returncode == 0, submitted.stderr
            (job_id,) = msgspec.json.decode(submitted.stdout)["job_ids"]
            wait_until(lambda: ledger_count(state) == 1, what="the job in the ledger")
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(30) == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()
        assert path.exists()  # systemd's file: it stays for the next start
        assert not (run_dir / "elsewhere.sock").exists()
        log_text = (tmp_path / "daemon.log").read_text()
        assert '"activated":true' in log_text.replace(" ", "")
    (entry,) = ledger(state)
    assert entry["job_id"] == job_id
    assert entry["submitted_by"].startswith("uid:65534(nobody)")
    assert group


def test_a_private_user_namespace_is_told_from_the_init_one(tmp_path: Path) -> None:
    init = tmp_path / "init"
    init.write_text("         0          0 4294967295\n")
    private = tmp_path / "private"
    private.write_text("         0          0          1\n     61234      61234          1\n")
    assert sees_real_uids(init)
    assert not sees_real_uids(private)


def test_an_allow_table_is_refused_in_a_private_user_namespace(tmp_path: Path) -> None:
    """As under PrivateUsers=yes: a daemon that cannot tell its producers apart refuses a table
    that would need to (re-created with unshare, mapping only root)."""
    require_root()
    unshare = require_tool("unshare")
    config = tmp_path / "swarmd.toml"
    config.write_text('[api.allow]\n"webapp" = ["GID-1*"]\n')
    serve = [sys.executable, "-m", "swarmd", "serve", "--state-dir", str(tmp_path / "state"),
             "--metrics-listen", f"127.0.0.1:{free_port()}", "--config", str(config)]  # fmt: skip
    result = subprocess.run(
        [unshare, "--user", "--map-root-user", *serve],
        capture_output=True,
        text=True,
        env=base_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "config error: api.allow: this daemon runs in a private user namespace" in result.stderr
    assert "PrivateUsers=no" in result.stderr
