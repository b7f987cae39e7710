"""A daemon and its clients on either backend, for tests that run on both: `Stack`, and the
`stack` fixture (SQLite in tmp_path; the Redis at 127.0.0.1:6379 under a prefix of its own,
deleted afterwards). Import the fixture into a test module to use it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support.harness import Daemon
from support.services import forget_prefix, require_redis
from swarmd import AsyncClient
from swarmd.config import Settings

#: Fast retries and a short lease (a killed daemon's job comes back soon on Redis too).
DAEMON_ENV = {"SWARMD_BACKOFF_BASE": "0.01", "SWARMD_BACKOFF_CAP": "0.05", "SWARMD_LEASE_SECONDS": "1"}


@dataclass
class Stack:
    """A backend for a daemon and its clients: SQLite in ``state``, or Redis under ``prefix``."""

    kind: str
    state: Path
    url: str = ""
    prefix: str = ""
    daemons: list[Daemon] = field(default_factory=list)

    def settings(self) -> Settings:
        if self.kind == "sqlite":
            return Settings()
        return Settings(backend="redis", redis_url=self.url, redis_prefix=self.prefix)

    def daemon(self) -> Daemon:
        args = ["--agents", "support.agents"]
        env = dict(DAEMON_ENV)
        if self.kind == "redis":
            args += ["--backend", "redis", "--redis-url", self.url, "--redis-prefix", self.prefix]
            env["SWARMD_ALLOW_VOLATILE_REDIS"] = "true"
        daemon = Daemon(self.state, *args, env=env)
        self.daemons.append(daemon)
        return daemon

    def client(self, backstop: float = 1.0) -> AsyncClient:
        return AsyncClient(self.state, settings=self.settings(), wait_backstop=backstop)

    def cli_args(self) -> list[str]:
        """What the CLI needs to reach this queue."""
        if self.kind == "sqlite":
            return ["--state-dir", str(self.state)]
        return [
            "--state-dir",
            str(self.state),
            "--backend",
            "redis",
            "--redis-url",
            self.url,
            "--redis-prefix",
            self.prefix,
        ]


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    state = tmp_path / "state"
    if request.param == "sqlite":
        made = Stack("sqlite", state)
    else:
        made = Stack("redis", state, require_redis(), f"swarmd-test-{os.urandom(5).hex()}")
    try:
        yield made
    finally:
        for daemon in made.daemons:
            daemon.ensure_dead()
        if made.kind == "redis":
            forget_prefix(made.url, made.prefix)
