"""A real `swarmd serve` subprocess and the real CLI, for integration tests.

Waiting here is always for a condition (a ledger count, a readiness answer, a process exit)
with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from support.paths import REPO
from swarmd.testing.daemon import LocalDaemon, free_port
from swarmd.testing.polling import wait_until

__all__ = [
    "REPO",
    "Daemon",
    "assert_exactly_once",
    "base_env",
    "free_port",
    "ledger",
    "ledger_count",
    "queue_states",
    "running",
    "submit",
    "swarmd",
    "wait_until",
]


def base_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SWARMD_", "OTEL_", "NOTIFY_"))}
    # The repository (swarmd itself) and tests/ (the `support.agents` module) for the daemon;
    # no empty entry, which would put the working directory on the daemon's sys.path.
    inherited = [entry for entry in env.get("PYTHONPATH", "").split(os.pathsep) if entry]
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests"), *inherited])
    env.setdefault("OTEL_TRACES_EXPORTER", "none")
    env.update(extra or {})
    return env


def swarmd(
    *args: str, check: bool = True, env: dict[str, str] | None = None, input: bytes | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI (``python -m swarmd``)."""
    result = subprocess.run(
        [sys.executable, "-m", "swarmd", *args],
        capture_output=True,
        text=input is None,
        input=input,
        env=base_env(env),
        timeout=timeout,
        check=False,
    )
    if input is not None:  # bytes in, decode out
        result = subprocess.CompletedProcess(
            result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
        )
    if check and result.returncode != 0:
        raise AssertionError(f"swarmd {' '.join(args)} exited {result.returncode}: {result.stderr}")
    return result


class Daemon(LocalDaemon):
    """One `swarmd serve` process on a state directory (`swarmd.testing.daemon.LocalDaemon`),
    in the environment of `base_env`: none of this process's swarmd settings, tests/ importable."""

    def environment(self) -> dict[str, str]:
        return base_env(self.env)


@contextlib.contextmanager
def running(state_dir: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Daemon]:
    daemon = Daemon(state_dir, *args, env=env).start()
    try:
        yield daemon
    finally:
        daemon.ensure_dead()


def submit(state_dir: Path, agent: str, gid: str, *extra: str, payload: Any = None, count: int = 1) -> list[str]:
    args = ["submit", "--state-dir", str(state_dir), "--agent", agent, "--gid", gid, "--count", str(count), "--json"]
    if payload is not None:
        args += ["--payload", msgspec.json.encode(payload).decode()]
    result = swarmd(*args, *extra)
    return list(msgspec.json.decode(result.stdout)["job_ids"])


def ledger(state_dir: Path) -> list[dict[str, Any]]:
    """Every ledger entry, through the real `swarmd ledger export`."""
    out = swarmd("ledger", "export", "--state-dir", str(state_dir)).stdout
    return [msgspec.json.decode(line) for line in out.splitlines() if line.strip()]


def ledger_count(state_dir: Path) -> int:
    """Entries committed so far (read straight from the file: cheap enough to poll)."""
    path = state_dir / "swarmd.db"
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as conn:
        try:
            return int(conn.execute("SELECT count(*) FROM ledger").fetchone()[0])
        except sqlite3.OperationalError:
            return 0


def queue_states(state_dir: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(f"file:{state_dir / 'swarmd.db'}?mode=ro", uri=True, timeout=5)) as conn:
        return {str(state): int(n) for state, n in conn.execute("SELECT state, count(*) FROM jobs GROUP BY state")}


def assert_exactly_once(entries: Sequence[dict[str, Any]], job_ids: Sequence[str]) -> None:
    """Every job id once, nothing else, indices 0..n-1 without a gap."""
    seen = [entry["job_id"] for entry in entries]
    assert len(seen) == len(set(seen)), "a job appears twice in the ledger"
    assert sorted(seen) == sorted(job_ids), (
        f"missing {len(set(job_ids) - set(seen))}, unexpected {len(set(seen) - set(job_ids))}"
    )
    assert [entry["index"] for entry in entries] == list(range(len(entries)))
