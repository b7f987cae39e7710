"""`swarmd serve` as a real subprocess over a real SQLite file."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import pytest
from support.harness import (
    Daemon,
    assert_exactly_once,
    base_env,
    free_port,
    ledger,
    ledger_count,
    queue_states,
    running,
    submit,
    swarmd,
    wait_until,
)

pytestmark = pytest.mark.slow


def test_submit_serve_every_job_in_the_ledger_with_its_gid_and_outcome(tmp_path: Path) -> None:
    state = tmp_path / "state"
    # Jobs submitted before any daemon runs are found when it starts.
    early = submit(state, "echo", "GID-early", payload={"n": 1}, count=3)
    with running(state) as daemon:
        wait_until(lambda: ledger_count(state) == 3, what="the early jobs")
        late = submit(state, "sleep", "GID-late", payload={"seconds": 0}, count=5)
        failing = submit(state, "fail", "GID-fail", "--max-attempts", "1", payload={"permanent": True})
        wait_until(lambda: ledger_count(state) == 9, what="all jobs")
        assert daemon.stop() == 0
    entries = ledger(state)
    assert_exactly_once(entries, early + late + failing)
    by_id = {entry["job_id"]: entry for entry in entries}
    assert all(by_id[j]["gid"] == "GID-early" and by_id[j]["outcome"] == "succeeded" for j in early)
    assert all(by_id[j]["result"] == {"n": 1} for j in early)
    assert all(by_id[j]["gid"] == "GID-late" and by_id[j]["outcome"] == "succeeded" for j in late)
    assert by_id[failing[0]]["outcome"] == "dead_lettered"
    verify = swarmd("ledger", "verify", "--state-dir", str(state))
    assert verify.stdout.startswith("ledger ok: 9 entries")


def test_kill_9_with_a_thousand_jobs_in_flight_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ids = submit(state, "sleep", "GID-k", payload={"seconds": 2}, count=1200)
    daemon = Daemon(state, "--max-concurrent", "2000").start()
    try:
        wait_until(lambda: daemon.metrics().get("swarmd_agents_in_flight", 0) >= 1000, what="1000 jobs in flight")
        daemon.kill9()
        assert queue_states(state).get("leased", 0) >= 1000  # the dead daemon's leases are still held
        daemon.start()  # the restart returns them to the queue at once
        wait_until(lambda: ledger_count(state) == 1200, timeout=60, what="all 1200 jobs after the restart")
        assert daemon.stop() == 0
    finally:
        daemon.ensure_dead()
    entries = ledger(state)
    assert_exactly_once(entries, ids)
    assert {entry["outcome"] for entry in entries} == {"succeeded"}
    assert queue_states(state) == {}  # nothing left leased (or anywhere)
    assert swarmd("ledger", "verify", "--state-dir", str(state)).returncode == 0


def test_sigterm_drains_within_grace_and_unfinished_jobs_run_after_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    quick = submit(state, "sleep", "GID-q", payload={"seconds": 0.2}, count=20)
    slow = submit(state, "sleep", "GID-s", payload={"seconds": 30}, count=30)
    daemon = Daemon(state, "--max-concurrent", "100", "--grace-seconds", "1").start()
    try:
        wait_until(lambda: ledger_count(state) == 20, what="the quick jobs")
        wait_until(lambda: daemon.metrics().get("swarmd_agents_in_flight", 0) == 30, what="slow jobs running")
        started = time.monotonic()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=20) == 0
        assert time.monotonic() - started < 1 + 10  # the grace period, plus start-up slack of a loaded machine
        assert ledger_count(state) == 20  # the slow ones were returned, not recorded
        assert queue_states(state) == {"ready": 30}
        # Their attempt was refunded: they start again as attempt 1.
        daemon.args = ["--max-concurrent", "100"]
        daemon.start()
        swarmd("cancel", "--state-dir", str(state), slow[0])  # cancel works on a running job too
        wait_until(lambda: daemon.metrics().get("swarmd_agents_in_flight", 0) == 29, what="29 running")
        for job_id in slow[1:]:
            swarmd("cancel", "--state-dir", str(state), job_id)
        wait_until(lambda: ledger_count(state) == 50, what="every job recorded")
        assert daemon.stop() == 0
    finally:
        daemon.ensure_dead()
    entries = ledger(state)
    assert_exactly_once(entries, quick + slow)
    outcomes = {entry["job_id"]: (entry["outcome"], entry["attempt"]) for entry in entries}
    assert all(outcomes[j] == ("succeeded", 1) for j in quick)
    assert all(outcomes[j] == ("cancelled", 1) for j in slow)


def test_sd_notify_ready_watchdog_and_stopping_on_a_real_socket(tmp_path: Path) -> None:
    state = tmp_path / "state"
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(20)
    messages: list[str] = []

    def receive_until(word: str) -> None:
        while not any(word in m.split("\n") for m in messages):
            messages.append(sock.recv(4096).decode())

    env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "200000"}
    try:
        with running(state, env=env) as daemon:
            receive_until("READY=1")
            receive_until("WATCHDOG=1")
            daemon.signal(signal.SIGTERM)
            receive_until("STOPPING=1")
            assert daemon.wait() == 0
    finally:
        sock.close()
    flat = [line for message in messages for line in message.split("\n")]
    assert flat.index("READY=1") < flat.index("WATCHDOG=1") < flat.index("STOPPING=1")


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


def test_an_undecodable_job_is_dead_lettered_and_the_daemon_runs_on(tmp_path: Path) -> None:
    state = tmp_path / "state"
    good = submit(state, "echo", "GID-ok", payload="before")
    with contextlib.closing(sqlite3.connect(state / "swarmd.db")) as conn, conn:
        conn.execute(
            "INSERT INTO jobs (id, agent, gid, state, body) VALUES ('corrupt-1', 'echo', 'GID-x', 'ready', ?)",
            (b'{"id": "corrupt-1", "gid": 7}',),
        )
    with running(state) as daemon:
        wait_until(lambda: ledger_count(state) == 2, what="both jobs to be recorded")
        after = submit(state, "echo", "GID-ok", payload="after")
        wait_until(lambda: ledger_count(state) == 3, what="a job after the bad one")
        dead = msgspec.json.decode(swarmd("dlq", "list", "--state-dir", str(state), "--json").stdout)
        assert daemon.metrics()['swarmd_rejected_jobs_total{reason="malformed"}'] == 1
    assert [d["job_id"] for d in dead] == ["corrupt-1"]
    assert "gid" in dead[0]["error"] and "malformed" in dead[0]["error"]
    outcomes = {e["job_id"]: e["outcome"] for e in ledger(state)}
    assert outcomes == {good[0]: "succeeded", "corrupt-1": "dead_lettered", after[0]: "succeeded"}


def test_sighup_reloads_the_concurrency_limit(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = tmp_path / "swarmd.toml"
    config.write_text("max_concurrent = 7\n")
    with running(state, "--config", str(config)) as daemon:
        assert daemon.metrics()["swarmd_concurrency_limit"] == 7
        config.write_text("max_concurrent = 3\nlog_level = 'debug'\n")
        daemon.signal(signal.SIGHUP)
        wait_until(lambda: daemon.metrics()["swarmd_concurrency_limit"] == 3, what="the new limit")
        assert '"event":"reloaded"' in daemon.log()


def test_demo_runs_a_swarm_and_reports(tmp_path: Path) -> None:
    result = swarmd("demo", env={"TMPDIR": str(tmp_path)}, timeout=120)
    out = result.stdout
    assert "50 agents" in out and "concurrent peak: 50" in out
    assert "identity violations: 0" in out and "ledger verified: ok" in out
