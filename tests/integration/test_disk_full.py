"""Disk full: the state directory on a small tmpfs that the test mounts and then fills.

When a group commit fails with ENOSPC (SQLite: "database or disk is full") the daemon must
stop reserving, say why on ``/readyz`` (503 and the reason), keep everything it had already
committed, keep running, and resume by itself once space returns — with every job recorded
exactly once in the end. Lease renewals and reservations fail meanwhile too (leases are
short here, so that they do): neither may take the worker down.

Mounting needs root (or CAP_SYS_ADMIN); without it the test is skipped with the reason, and
with ``SWARMD_TEST_STRICT=1`` it fails instead (this machine allows it).
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.harness import (
    Daemon,
    assert_exactly_once,
    ledger,
    ledger_count,
    queue_states,
    submit,
    swarmd,
    wait_until,
)

pytestmark = pytest.mark.slow

FS_SIZE = "8m"


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A fresh tmpfs of FS_SIZE mounted (mode 0700) on tmp_path/state, unmounted afterwards."""
    mountpoint = tmp_path / "state"
    mountpoint.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={FS_SIZE},mode=0700", "swarmd-test", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        reason = f"cannot mount a tmpfs here ({result.stderr.strip() or result.returncode})"
        if os.environ.get("SWARMD_TEST_STRICT") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], capture_output=True, check=False)
        if os.path.ismount(mountpoint):  # something still holds it: detach it anyway
            subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, check=False)


def fill(path: Path) -> int:
    """Write ``path`` until the filesystem refuses another byte; return its size."""
    written = 0
    with path.open("wb", buffering=0) as ballast:
        for chunk in (1 << 20, 1 << 12, 1):
            block = b"\0" * chunk
            while True:
                try:
                    written += ballast.write(block) or 0
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    return written


def empty_wal(state: Path) -> None:
    """Copy the WAL into the database and truncate it to nothing (waiting for the daemon's
    writes in progress): from here on, every commit needs space the WAL file does not have."""
    with contextlib.closing(sqlite3.connect(state / "swarmd.db", timeout=10)) as conn:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0


def commit_failure(daemon: Daemon) -> str | None:
    """/readyz's reason when it reports a failed commit (503), else None."""
    status, reason = daemon.get("/readyz")
    return reason if status == 503 and "cannot commit outcomes" in reason else None


def leases_expired(state: Path) -> bool:
    """Every leased job's lease is over (the daemon could not renew them)."""
    uri = f"file:{state / 'swarmd.db'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as conn:
        leased, live = conn.execute(
            "SELECT count(*), coalesce(sum(lease_until > ?), 0) FROM jobs WHERE state = 'leased'", (time.time(),)
        ).fetchone()
    return bool(leased) and live == 0


def test_a_full_disk_pauses_the_daemon_which_says_why_and_resumes_by_itself(small_fs: Path) -> None:
    state = small_fs
    daemon = Daemon(state, "--max-concurrent", "20", env={"SWARMD_LEASE_SECONDS": "2"})
    try:
        daemon.start()
        before = submit(state, "echo", "GID-before", payload={"n": 1}, count=50)
        wait_until(lambda: ledger_count(state) == 50, what="the first jobs")
        # 20 jobs that are running when the disk fills (they take every slot), 100 queued behind them.
        running = submit(state, "sleep", "GID-running", payload={"seconds": 1.5}, count=20)
        wait_until(lambda: daemon.metrics()["swarmd_agents_in_flight"] == 20, what="20 jobs running")
        queued = submit(state, "echo", "GID-queued", payload={"n": 2}, count=100)
        assert queue_states(state) == {"leased": 20, "ready": 100}

        ballast = state / "ballast"
        empty_wal(state)  # else commits could go on in the WAL's copied frames, needing no new space
        assert fill(ballast) > 0
        # The running jobs end, and their group commit needs room the filesystem does not have.
        # (The reservation that their freed slots allow may fail first: /readyz then says that,
        # until the commit fails too, which it reports first.)
        reason = wait_until(lambda: commit_failure(daemon), timeout=20, what="/readyz to report the failed commit")
        assert reason is not None
        assert "database or disk is full" in reason, reason
        assert daemon.get("/healthz")[0] == 200  # not ready, but alive: no restart wanted
        # Nothing committed is lost, every job not recorded is still in the queue, and the daemon
        # runs on through failed renewals (every second here) and failed reservations. (A commit
        # may still fit in the part of the WAL a checkpoint already copied, which needs no new
        # space: some of the running jobs may be recorded, a few queued ones reserved, whose
        # leases then run out like the others'.)
        wait_until(lambda: leases_expired(state), what="the leases to run out, unrenewed")
        assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log()
        recorded = ledger_count(state)
        assert 50 <= recorded < 170
        assert recorded + sum(queue_states(state).values()) == 170
        assert daemon.metrics()["swarmd_agents_in_flight"] == 0
        assert daemon.metrics()["swarmd_ready"] == 0
        # A producer is refused with a clear message, and nothing is acknowledged to it.
        refused = swarmd(
            "submit", "--state-dir", str(state), "--agent", "echo", "--gid", "GID-refused", "--json", check=False
        )
        assert refused.returncode == 1 and refused.stderr.startswith("swarmd: error: "), refused.stderr
        assert "full" in refused.stderr and "Traceback" not in refused.stderr
        assert daemon.get("/readyz")[0] == 503

        ballast.unlink()
        wait_until(lambda: daemon.get("/readyz")[0] == 200, timeout=20, what="/readyz to recover")
        wait_until(lambda: ledger_count(state) == 170, timeout=30, what="every job after the disk had room again")
        assert '"event":"commit_recovered"' in daemon.log()
        assert daemon.stop() == 0
    finally:
        daemon.ensure_dead()
    entries = ledger(state)
    assert_exactly_once(entries, before + running + queued)
    assert {entry["outcome"] for entry in entries} == {"succeeded"}
    assert queue_states(state) == {}
    with contextlib.closing(sqlite3.connect(state / "swarmd.db")) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
