"""The `redis-throughput` and `redis-e2e` scenarios: the same measurements as `throughput` and
`e2e`, on a Redis Streams queue (a daemon with ``--backend redis`` on the Redis at ``$SWARMD_BENCH_REDIS_URL``,
default redis://127.0.0.1:6379/0), under a key prefix of its own that is deleted afterwards.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path
from typing import Any

import redis

from swarmd.bench.helpers import (
    COARSE_STEP,
    BenchError,
    Drain,
    all_met,
    await_entries,
    e2e_result,
    floor_e2e,
    floor_throughput,
    measure_drain,
    run_uvloop,
    serve_offers_workers,
    swarm_round_trips,
    target,
    throughput_result,
    workers_targets,
)
from swarmd.client import Client
from swarmd.config import Settings
from swarmd.testing.daemon import LocalDaemon

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


def _redis_drain(jobs: int, args: list[str]) -> Drain:
    """A fresh daemon (started with ``args``) on a fresh prefix draining ``jobs`` queued no-op
    jobs, its ledger verified; the prefix is deleted afterwards."""
    store = _Store()
    try:
        with tempfile.TemporaryDirectory(prefix="swarmd-bench-") as tmp:
            state = Path(tmp) / "state"
            with store.client(state) as client:
                for start in range(0, jobs, 5000):
                    client.submit_many(
                        [{"agent": "echo", "gid": f"GID-{i}"} for i in range(start, min(jobs, start + 5000))]
                    )
            daemon = store.daemon(state, args).start()
            try:
                drain = measure_drain(
                    daemon,
                    jobs,
                    functools.partial(_has_entries, store),
                    functools.partial(await_entries, store.ledger_length, step=COARSE_STEP),
                )
            finally:
                daemon.stop()
            with store.client(state) as client:
                report = client.verify()
        if not report.ok or report.entries != jobs:
            raise BenchError(f"redis-throughput: ledger has {report.entries} of {jobs} ({report.summary()})")
        return drain
    finally:
        store.drop()


def bench_redis_throughput(jobs: int = 20_000, repeat: int = 3) -> dict[str, Any]:
    """``repeat`` rounds, each of a drain of ``jobs`` queued no-op jobs by a fresh daemon on a
    fresh prefix, one by a daemon with ``--workers 2`` (where serve offers it) and a floor."""
    offered = serve_offers_workers()
    drains: list[Drain] = []
    two: list[Drain] = []
    floor = []
    for _ in range(repeat):
        drains.append(_redis_drain(jobs, []))
        if offered:
            two.append(_redis_drain(jobs, ["--workers", "2"]))
        floor.append(run_uvloop(floor_throughput(jobs, 256)))
    result = throughput_result(drains, floor)
    targets = [
        target(
            "jobs_per_s", ">= 15,000 jobs/s (1 worker)", result["swarmd_jobs_per_s"]["median"], 15_000, at_least=True
        ),
        *workers_targets(drains, two, offered),
    ]
    return {
        "jobs": jobs,
        **result,
        "workers_2": throughput_result(two, floor) if two else None,
        "targets": targets,
        "met": all_met(targets),
    }


def bench_redis_e2e(repeat: int = 20) -> dict[str, Any]:
    """``repeat`` round trips of a 50-agent swarm (after three of warm-up) and as many floors."""
    store = _Store()
    try:
        with tempfile.TemporaryDirectory(prefix="swarmd-bench-") as tmp:
            state = Path(tmp) / "state"
            with store.daemon(state), store.client(state) as client:
                samples, submits, wakes = swarm_round_trips(client, repeat)
                report = client.verify()
        if not report.ok or report.entries != 50 * (repeat + 3):
            raise BenchError(f"redis-e2e: ledger has {report.entries} entries ({report.summary()})")
    finally:
        store.drop()
    floor = [floor_e2e() for _ in range(repeat)]
    result = e2e_result(samples, floor, submits, wakes)
    targets = [
        target(
            "overhead_s", "overhead <= 3 ms (reference: taskiq 13.5 ms)", result["swarmd_overhead_s"]["median"], 0.003
        )
    ]
    return {**result, "targets": targets, "met": all_met(targets)}
