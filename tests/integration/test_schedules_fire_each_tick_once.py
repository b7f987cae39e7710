"""Schedules on real daemons, on both backends: each tick is one job and one ledger entry,
across a restart (the ticks missed meanwhile handled per ``catch_up``) and across three daemons
on one Redis. Ticks come every second (6-field cron, seconds first); the ``tick`` agent returns
its job's idempotency key, ``schedule:<name>:<tick>``, so the ledger says which tick each entry is.
Every wait is for a condition with a deadline.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from support.harness import Daemon, swarmd, wait_until
from support.redis_deployment import Deployment, fresh_prefix, start_all
from support.services import forget_prefix, require_redis

pytestmark = pytest.mark.slow

#: One schedule per catch_up, all on the `tick` agent, every second.
CONFIG = "".join(
    f'[[schedule]]\nname = "{name}"\nagent = "tick"\ngid = "GID-TICK"\ncron = "* * * * * *"\ncatch_up = "{mode}"\n'
    for name, mode in (("skip", "none"), ("latest", "latest"), ("every", "all"))
)


@dataclass
class Store:
    """Daemons and CLI calls on one store: a SQLite state directory, or a Redis key prefix."""

    root: Path
    redis: Deployment | None = None
    daemons: list[Daemon] = field(default_factory=list)

    @property
    def config(self) -> Path:
        path = self.root / "swarmd.toml"
        if not path.exists():
            path.write_text(CONFIG)
        return path

    def daemon(self) -> Daemon:
        extra = ["--agents", "support.agents", "--config", str(self.config)]
        if self.redis is not None:
            return self.redis.daemon("--allow-volatile-redis", *extra)
        daemon = Daemon(self.root / "state", *extra)
        self.daemons.append(daemon)
        return daemon

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        if self.redis is not None:
            return self.redis.cli(*args, "--config", str(self.config))
        return swarmd(*args, "--state-dir", str(self.root / "state"), "--config", str(self.config))

    def schedules(self) -> dict[str, dict[str, Any]]:
        out = self.cli("schedule", "list", "--json").stdout
        return {row["name"]: row for row in map(msgspec.json.decode, out.splitlines())}

    def ticks(self) -> list[tuple[str, float, dict[str, Any]]]:
        """(schedule, tick, ledger row) of every schedule job in the ledger, in ledger order."""
        found = []
        for line in self.cli("ledger", "export").stdout.splitlines():
            row = msgspec.json.decode(line)
            _, name, when = row["result"]["key"].split(":", 2)
            found.append((name, datetime.fromisoformat(when).timestamp(), row))
        return found

    def kill_all(self) -> None:
        for daemon in self.daemons:
            daemon.ensure_dead()
        if self.redis is not None:
            self.redis.kill_all()


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        store = Store(tmp_path)
        try:
            yield store
        finally:
            store.kill_all()
        return
    yield from _on_redis(tmp_path)


@pytest.fixture
def redis_store(tmp_path: Path) -> Iterator[Store]:
    yield from _on_redis(tmp_path)


def _on_redis(tmp_path: Path) -> Iterator[Store]:
    url = require_redis()
    store = Store(tmp_path, Deployment(url, fresh_prefix(), tmp_path))
    try:
        yield store
    finally:
        store.kill_all()
        assert store.redis is not None
        forget_prefix(url, store.redis.prefix)


def last_ticks(store: Store) -> dict[str, float]:
    return {name: row["last_tick"] or 0.0 for name, row in store.schedules().items()}


def wait_ticks_past(store: Store, instant: float) -> None:
    wait_until(
        lambda: len(last_ticks(store)) == 3 and min(last_ticks(store).values()) >= instant,
        timeout=30,
        what=f"every schedule to fire a tick after {instant}",
        step=0.2,
    )


def test_a_restart_fires_no_tick_twice_and_catches_up_as_each_schedule_says(store: Store) -> None:
    first = store.daemon().start()
    wait_ticks_past(store, time.time() + 1)  # two ticks at least
    assert first.stop() == 0
    stopped = last_ticks(store)
    # No daemon for over three ticks: L+1 .. L+3 fall while none runs.
    wait_until(lambda: time.time() >= max(stopped.values()) + 3.5, timeout=10, what="three ticks to pass")
    second = store.daemon().start()
    wait_ticks_past(store, time.time() + 1)
    assert second.stop() == 0

    ticks = store.ticks()
    keys = Counter((name, tick) for name, tick, _ in ticks)
    assert max(keys.values()) == 1, f"ticks recorded twice: {[k for k, n in keys.items() if n > 1]}"
    assert len({row["job_id"] for _, _, row in ticks}) == len(ticks)
    by_name = {name: sorted(tick for n, tick, _ in ticks if n == name) for name in ("skip", "latest", "every")}
    # all: every second from the first tick to the last, the missed ones included
    every = by_name["every"]
    assert every == [every[0] + i for i in range(len(every))], every
    # none and latest: the ticks while no daemon ran are missing, but latest fired the last of
    # them at the start (one second before the first tick none fired). L+1 may be fired by the
    # first daemon as it stopped (submitted, not yet remembered): left out of the comparison.
    first_after = {name: min(t for t in by_name[name] if t > stopped[name] + 1) for name in ("skip", "latest")}
    assert first_after["skip"] >= stopped["skip"] + 4
    assert first_after["latest"] == first_after["skip"] - 1
    for name in ("skip", "latest"):
        assert stopped[name] + 2 not in by_name[name]
    # swarmd schedule list: the last tick and its job are in the ledger
    job_of = {(name, tick): row["job_id"] for name, tick, row in ticks}
    for name, row in store.schedules().items():
        assert row["next_tick"] > row["last_tick"]
        assert job_of.get((name, row["last_tick"])) in (row["last_job"], None)  # None: queued at the stop
        assert row["cron"] == "* * * * * *"
    header, *lines = store.cli("schedule", "list").stdout.splitlines()
    assert header.split()[:3] == ["NAME", "AGENT", "GID"]
    assert [line.split()[0] for line in lines] == ["every", "latest", "skip"]


@pytest.mark.redis
def test_three_daemons_on_one_redis_fire_each_tick_once(redis_store: Store) -> None:
    daemons = [redis_store.daemon() for _ in range(3)]
    start_all(daemons)
    wait_ticks_past(redis_store, time.time() + 3)
    for daemon in daemons:
        assert daemon.stop() == 0
    ticks = redis_store.ticks()
    keys = Counter((name, tick) for name, tick, _ in ticks)
    assert max(keys.values()) == 1, f"ticks recorded twice: {[k for k, n in keys.items() if n > 1]}"
    assert len(keys) >= 3 * 3
    assert redis_store.cli("ledger", "verify").stdout.startswith(f"ledger ok: {len(ticks)} entries")
    # each daemon fired ticks; the idempotency key gave all but one of them the first one's job
    logs = [daemon.log() for daemon in daemons]
    assert all('"event":"schedule_fired"' in log for log in logs)
    assert sum(log.count('"submitted":false') for log in logs) >= len(keys)
