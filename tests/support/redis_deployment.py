"""Real daemons and CLI calls sharing one Redis under one key prefix, and what their tests check.

A `Deployment` names the Redis (URL and key prefix) and makes the daemons and CLI calls that
use it; `assert_clean` is the end-of-run check: every job once in a gap-free, verified ledger.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from support.harness import Daemon, assert_exactly_once, swarmd, wait_until
from support.services import forget_prefix, require_redis


@dataclass
class Deployment:
    """Daemons and CLI calls sharing one Redis under one key prefix."""

    url: str
    prefix: str
    root: Path
    daemons: list[Daemon] = field(default_factory=list)

    @property
    def args(self) -> list[str]:
        return ["--backend", "redis", "--redis-url", self.url, "--redis-prefix", self.prefix]

    def daemon(self, *extra: str, env: dict[str, str] | None = None) -> Daemon:
        """A daemon (not started) with a state directory of its own."""
        state = self.root / f"d{len(self.daemons)}"
        daemon = Daemon(state, *self.args, *extra, env=env)
        self.daemons.append(daemon)
        return daemon

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return swarmd(*args, *self.args, check=check)

    def cli_json(self, *args: str) -> Any:
        return msgspec.json.decode(self.cli(*args, "--json").stdout)

    def submit(self, agent: str, gid: str, *extra: str, payload: Any = None, count: int = 1) -> list[str]:
        args = ["submit", "--agent", agent, "--gid", gid, "--count", str(count), *extra]
        if payload is not None:
            args += ["--payload", msgspec.json.encode(payload).decode()]
        return list(self.cli_json(*args)["job_ids"])

    def ledger(self) -> list[dict[str, Any]]:
        return [msgspec.json.decode(line) for line in self.cli("ledger", "export").stdout.splitlines() if line]

    def ledger_len(self) -> int:
        """Entries committed so far: the length of the ``ledger`` list (cheap enough to poll)."""
        import redis  # noqa: PLC0415

        with redis.Redis.from_url(self.url, socket_timeout=5) as client:
            return int(client.llen(f"{{{self.prefix}}}:ledger"))

    def wait_ledger(self, n: int, timeout: float = 60.0) -> None:
        wait_until(lambda: self.ledger_len() >= n, timeout=timeout, what=f"{n} ledger entries", step=0.1)

    def kill_all(self) -> None:
        for daemon in self.daemons:
            daemon.ensure_dead()


def fresh_prefix() -> str:
    """A key prefix no other test uses."""
    return f"swarmd-test-{os.urandom(5).hex()}"


def start_all(daemons: list[Daemon]) -> None:
    """Start every daemon, then wait for each to be ready (their start-ups overlap)."""
    for daemon in daemons:
        daemon.start(wait_ready=False)
    for daemon in daemons:
        daemon.wait_ready()


def readiness(daemon: Daemon) -> tuple[int, str]:
    """What /readyz answers now: (status, body); (0, "") when nothing answers."""
    return daemon.get("/readyz", timeout=2.0)


def wait_readiness(daemon: Daemon, code: int, timeout: float) -> None:
    """Wait until /readyz answers ``code``."""
    wait_until(lambda: readiness(daemon)[0] == code, timeout=timeout, what=f"/readyz {code}")


def assert_clean(deployment: Deployment, job_ids: list[str]) -> list[dict[str, Any]]:
    """Every job once in a gap-free, verified ledger, and nothing left queued, leased or dead."""
    entries = deployment.ledger()
    assert_exactly_once(entries, job_ids)
    verify = deployment.cli("ledger", "verify")
    assert verify.stdout.startswith(f"ledger ok: {len(job_ids)} entr"), verify.stdout  # entry, entries
    assert deployment.cli_json("jobs") == []
    return entries


@contextlib.contextmanager
def shared_redis(root: Path) -> Iterator[Deployment]:
    """A `Deployment` on the shared Redis under a fresh prefix: its daemons killed and its keys
    deleted afterwards (skips without a Redis, fails under SWARMD_TEST_STRICT=1)."""
    url = require_redis()
    deployment = Deployment(url, fresh_prefix(), root)
    try:
        yield deployment
    finally:
        deployment.kill_all()
        forget_prefix(url, deployment.prefix)
