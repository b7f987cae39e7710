"""A real `swarmd serve` subprocess and the real CLI, for integration tests.

Waiting here is always for a condition (a ledger count, a readiness answer, a process exit)
with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from prometheus_client.parser import text_string_to_metric_families

from swarmd.testing.daemon import free_port, serve_command

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

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent


def wait_until(predicate: Callable[[], T], *, timeout: float = 30.0, what: str = "condition", step: float = 0.02) -> T:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


def base_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SWARMD_", "OTEL_", "NOTIFY_"))}
    # The repository (swarmd itself) and tests/ (the `testagents` module) for the daemon.
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests"), env.get("PYTHONPATH", "")])
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


class Daemon:
    """One `swarmd serve` process on a state directory."""

    def __init__(self, state_dir: Path, *args: str, env: dict[str, str] | None = None, port: int | None = None) -> None:
        self.state_dir = state_dir
        self.port = port or free_port()
        self.args = list(args)
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = state_dir.parent / f"{state_dir.name}-daemon-{self.port}.log"
        self.starts = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, *, wait_ready: bool = True, timeout: float = 30.0) -> Daemon:
        self.starts += 1
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            serve_command(self.state_dir, self.port, *self.args),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=base_env(self.env),
        )
        log.close()
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0, ""

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode} before ready:\n{self.log()}")
            return self.get("/readyz", timeout=1.0)[0] == 200

        wait_until(ready, timeout=timeout, what="the daemon to report ready")

    def metrics(self) -> dict[str, float]:
        """Every sample, keyed ``name{label="v",...}`` (labels sorted) and plain ``name``."""
        status, text = self.get("/metrics")
        assert status == 200, f"/metrics answered {status}"
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return samples

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def ensure_dead(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


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
