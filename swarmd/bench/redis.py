"""The Redis scenarios of `swarmd bench`: the same measurements as for SQLite, on a Redis
Streams queue (a daemon with ``--backend redis`` on the Redis at ``$SWARMD_BENCH_REDIS_URL``,
default redis://127.0.0.1:6379/0), under a key prefix of its own that is deleted afterwards.
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from swarmd.bench import main as bench
from swarmd.client import Client
from swarmd.config import Settings
from swarmd.testing.daemon import LocalDaemon
from swarmd.testing.polling import WaitTimeout, wait_until

URL = os.environ.get("SWARMD_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


class _Store:
    """A unique prefix on the bench Redis, and how to read its ledger length cheaply."""

    def __init__(self) -> None:
        self.prefix = f"swarmd-bench-{os.urandom(4).hex()}"
        self.redis = redis.Redis.from_url(URL)
        self.redis.ping()
        self.settings = Settings(backend="redis", redis_url=URL, redis_prefix=self.prefix)

    def ledger_length(self) -> int:
        return int(self.redis.llen(f"{{{self.prefix}}}:ledger"))

    def daemon(self, state: Path, args: list[str] | None = None) -> LocalDaemon:
        return LocalDaemon(
            state,
            *("--backend", "redis", "--redis-url", URL, "--redis-prefix", self.prefix, "--allow-volatile-redis"),
            *(args or []),
            log_level="warning",
        )

    def client(self, state: Path) -> Client:
        return Client(state, settings=self.settings)

    def drop(self) -> None:
        keys = list(self.redis.scan_iter(match=f"{{{self.prefix}}}*", count=1000))
        for start in range(0, len(keys), 500):
            self.redis.delete(*keys[start : start + 500])
        self.redis.close()


def _has_entries(store: _Store) -> bool:
    return store.ledger_length() > 0


def _await_length(
    length: Callable[[], int], target: int, timeout: float = 120.0, step: float = bench.FINE_STEP
) -> float:
    try:
        wait_until(lambda: length() >= target, timeout=timeout, what=f"{target} ledger entries", step=step)
    except WaitTimeout as exc:
        raise bench.BenchError(f"ledger did not reach {target} entries in {timeout:.0f}s") from exc
    return time.perf_counter()


def _throughput(jobs: int, repeat: int) -> dict[str, Any]:
    drains = []
    for _ in range(repeat):
        store = _Store()
        try:
            with tempfile.TemporaryDirectory(prefix="swarmd-bench-") as tmp:
                state = Path(tmp) / "state"
                with store.client(state) as client:
                    for start in range(0, jobs, 5000):
                        client.submit_many(
                            [{"agent": "echo", "gid": f"GID-{i}"} for i in range(start, min(jobs, start + 5000))]
                        )
                daemon = store.daemon(state).start()
                try:
                    drain = bench.measure_drain(
                        daemon,
                        jobs,
                        functools.partial(_has_entries, store),
                        functools.partial(_await_length, store.ledger_length, step=bench.COARSE_STEP),
                    )
                finally:
                    daemon.stop()
                with store.client(state) as client:
                    report = client.verify()
            if not report.ok or report.entries != jobs:
                raise bench.BenchError(f"redis-throughput: ledger has {report.entries} of {jobs} ({report.summary()})")
            drains.append(drain)
        finally:
            store.drop()
    floor = [bench._run(bench._floor_throughput(jobs, 256)) for _ in range(repeat)]
    result = bench.throughput_result(drains, floor)
    return {"jobs": jobs, **result, "met": result["swarmd_jobs_per_s"]["median"] >= 15_000}


def _e2e(repeat: int) -> dict[str, Any]:
    store = _Store()
    try:
        with tempfile.TemporaryDirectory(prefix="swarmd-bench-") as tmp:
            state = Path(tmp) / "state"
            specs = [
                {"agent": "sleep", "gid": f"GID-{i}", "payload": {"seconds": bench.AGENT_SECONDS}} for i in range(50)
            ]
            samples, submits = [], []
            with store.daemon(state), store.client(state) as client:
                for round_ in range(repeat + 3):
                    before = store.ledger_length()
                    started = time.perf_counter()
                    client.submit_many(specs, swarm=True)
                    submitted = time.perf_counter()
                    done = _await_length(store.ledger_length, before + 50)
                    if round_ >= 3:
                        samples.append(done - started - bench.AGENT_SECONDS)
                        submits.append(submitted - started)
                report = client.verify()
        if not report.ok or report.entries != 50 * (repeat + 3):
            raise bench.BenchError(f"redis-e2e: ledger has {report.entries} entries ({report.summary()})")
    finally:
        store.drop()
    floor = [bench._floor_e2e() for _ in range(repeat)]
    return bench.e2e_result(samples, floor, submits)


def run(kind: str, *, repeat: int, jobs: int) -> dict[str, Any]:
    """``kind``: "throughput" or "e2e"."""
    return _throughput(jobs, repeat) if kind == "throughput" else _e2e(repeat)
