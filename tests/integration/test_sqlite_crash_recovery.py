"""Crash anywhere (SQLite): kill -9 at 20 points of a 2,000-job run, restarting each time.

The kill points are chosen, with a seeded and printed random generator, among three kinds:

- ``commit``: a daemon thread is inside ``fdatasync``/``fsync`` of ``swarmd.db-wal`` — a group
  commit (ledger entries + queue removals in one transaction) is being made durable;
- ``checkpoint``: a daemon thread is writing or syncing ``swarmd.db`` itself, which in WAL mode
  only a checkpoint does (copying committed frames from the WAL back into the database);
- ``random``: a random moment of the daemon's life (a reserve, a handler, a lease renewal...).

The first two are observed from outside, without any hook in swarmd: ``/proc/PID/task/*/syscall``
shows the system call each thread is blocked in and its file descriptor, and
``/proc/PID/fd/N`` which file that is. Payloads are padded so that the WAL fills and the
daemon checkpoints several times during the run.

A client in this process submits the jobs meanwhile. At the end every job id it was told was
accepted is in the ledger exactly once, indices gap-free, `swarmd ledger verify` is ok,
``PRAGMA integrity_check`` is ok, and no job is left in the queue (leased or otherwise).
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from support.harness import Daemon, assert_exactly_once, ledger, ledger_count, queue_states, swarmd, wait_until

from swarmd import Client

pytestmark = pytest.mark.slow

JOBS = 2000
KILLS = 20
BATCH = 25
PER_LIFE = JOBS // KILLS
PAD = "x" * 12_000  # three database pages per job body, and again per ledger record (echo)
#: write, pwrite64, fsync, fdatasync by architecture (asm/unistd_64.h; asm-generic/unistd.h).
SYSCALLS = {"x86_64": (1, 18, 74, 75), "aarch64": (64, 68, 82, 83)}
SYS_WRITE, SYS_PWRITE64, SYS_FSYNC, SYS_FDATASYNC = SYSCALLS.get(platform.machine(), (-1, -1, -1, -1))
SYNCS = {SYS_FSYNC, SYS_FDATASYNC}
WRITES = {SYS_WRITE, SYS_PWRITE64}


def _can_watch_syscalls() -> str | None:
    """Why this machine cannot show a thread's current system call, or None if it can."""
    if platform.machine() not in SYSCALLS:
        return f"system call numbers of {platform.machine()} are not listed here"
    try:
        Path(f"/proc/{os.getpid()}/syscall").read_text()
    except OSError as exc:
        return f"/proc/PID/syscall is not readable here ({exc})"
    return None


def _blocked_in(pid: int) -> set[tuple[int, str]]:
    """(system call, file name) for each thread of ``pid`` inside a file write or sync now."""
    found: set[tuple[int, str]] = set()
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/syscall") as handle:
                fields = handle.read().split()
        except OSError:
            continue
        if not fields or not fields[0].isdigit():
            continue  # "running", or -1 (not in a system call)
        number = int(fields[0])
        if number not in SYNCS | WRITES:
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            found.add((number, os.path.basename(os.readlink(f"/proc/{pid}/fd/{int(fields[1], 16)}"))))
    return found


def _in_commit(pid: int) -> bool:
    return any(number in SYNCS and name == "swarmd.db-wal" for number, name in _blocked_in(pid))


def _in_checkpoint(pid: int) -> bool:
    return any(name == "swarmd.db" for _, name in _blocked_in(pid))


class Submitter(threading.Thread):
    """Submits the jobs while the daemon is being killed, as much as the test grants it (so
    that each daemon life has work), and keeps every id it was told was accepted."""

    def __init__(self, state: Path, rng: random.Random) -> None:
        super().__init__(name="submitter", daemon=True)
        self.state = state
        self.rng = rng
        self.accepted: list[str] = []
        self.error: BaseException | None = None
        self._granted = 0
        self._changed = threading.Condition()

    def grant(self, jobs: int) -> None:
        with self._changed:
            self._granted = min(JOBS, self._granted + jobs)
            self._changed.notify_all()

    @property
    def granted(self) -> int:
        with self._changed:
            return self._granted

    @property
    def idle(self) -> bool:
        """Everything granted so far has been submitted."""
        with self._changed:
            return len(self.accepted) >= self._granted

    def wait_idle(self, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(
                lambda: len(self.accepted) >= self._granted or self.error is not None, timeout
            )

    def run(self) -> None:
        try:
            with Client(self.state) as client:
                while len(self.accepted) < JOBS:
                    with self._changed:
                        self._changed.wait_for(lambda: self._granted > len(self.accepted))
                        n = min(BATCH, self._granted - len(self.accepted))
                    ids = client.submit_many([self._spec() for _ in range(n)]).job_ids
                    with self._changed:
                        self.accepted.extend(ids)
                        self._changed.notify_all()
        except BaseException as exc:  # reported by the test
            self.error = exc
            with self._changed:
                self._changed.notify_all()

    def _spec(self) -> dict[str, object]:
        if self.rng.random() < 0.5:
            return {"agent": "echo", "gid": "GID-crash", "payload": {"pad": PAD}}
        seconds = self.rng.choice([0, 0.001, 0.005, 0.02, 0.05])
        return {"agent": "sleep", "gid": "GID-crash", "payload": {"seconds": seconds, "pad": PAD}}


def _wait_for(kind: str, daemon: Daemon, submitter: Submitter, state: Path, deadline: float, spare: int) -> bool:
    """Poll until the daemon is inside a commit (or a checkpoint); while it has nothing left
    to do, grant the submitter more jobs (up to ``spare`` jobs ahead of the plan), so that
    commits go on and the WAL keeps growing."""
    probe = _in_commit if kind == "commit" else _in_checkpoint
    borrowed = 0
    while time.monotonic() < deadline:
        if probe(daemon.pid):
            return True
        if borrowed < spare and submitter.idle and ledger_count(state) >= len(submitter.accepted):
            submitter.grant(BATCH)
            borrowed += BATCH
        time.sleep(0.0002)
    return False


def test_kill_9_at_twenty_points_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    cannot = _can_watch_syscalls()
    if cannot is not None:
        pytest.skip(f"cannot aim kills at commits and checkpoints: {cannot}")
    seed = int(os.environ.get("SWARMD_TEST_SEED", random.randrange(2**32)))
    print(f"test_crash_sqlite seed={seed} (rerun with SWARMD_TEST_SEED={seed})")
    rng = random.Random(seed)
    state = tmp_path / "state"
    Client(state).close()  # create the state before the first daemon and the submitter race for it
    daemon = Daemon(state, "--max-concurrent", "64")
    submitter = Submitter(state, random.Random(rng.random()))
    kinds = ["commit"] * 8 + ["checkpoint"] * 6 + ["random"] * 6
    rng.shuffle(kinds)
    landed: Counter[str] = Counter()
    committed = 0
    try:
        daemon.start()
        submitter.start()
        for point, kind in enumerate(kinds):
            # Each life gets its share of the jobs, plus whatever earlier lives did not borrow.
            submitter.grant(max(0, (point + 1) * PER_LIFE - submitter.granted))
            if kind == "random":
                time.sleep(rng.uniform(0.0, 0.3))  # the kill point itself: a random moment
                hit = True
            else:
                spare = JOBS - submitter.granted - (KILLS - point - 1) * PER_LIFE // 2
                hit = _wait_for(kind, daemon, submitter, state, time.monotonic() + 3.0, spare)
            daemon.kill9()
            landed[kind if hit else f"{kind} (not caught: killed at the deadline)"] += 1
            daemon.start()  # returns every lease the dead daemon held, then reports ready
            now = ledger_count(state)
            assert now >= committed, f"seed={seed}: kill {point} ({kind}) lost committed entries"
            committed = now
        print(f"seed={seed}: kills by kind: {dict(landed)}")
        submitter.grant(JOBS)
        assert submitter.wait_idle(60) and submitter.error is None, f"seed={seed}: {submitter.error!r}"
        assert len(submitter.accepted) == JOBS
        wait_until(lambda: ledger_count(state) == JOBS, timeout=60, what=f"all {JOBS} jobs (seed={seed})")
        assert daemon.stop() == 0
    finally:
        submitter.grant(JOBS)
        daemon.ensure_dead()
    # The kills landed where they were meant to: inside commits and inside checkpoints.
    assert landed["commit"] >= 1 and landed["checkpoint"] >= 1, f"seed={seed}: {dict(landed)}"
    entries = ledger(state)
    assert_exactly_once(entries, submitter.accepted)
    assert {entry["outcome"] for entry in entries} == {"succeeded"}
    verify = swarmd("ledger", "verify", "--state-dir", str(state), check=False)
    assert verify.returncode == 0 and verify.stdout.startswith(f"ledger ok: {JOBS} entries"), verify.stdout
    with contextlib.closing(sqlite3.connect(state / "swarmd.db")) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert queue_states(state) == {}  # nothing leased, ready or dead
