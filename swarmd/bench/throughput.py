"""The `throughput` scenario: a SQLite daemon draining queued no-op jobs against bare asyncio
tasks (its CPU per job against theirs), with 1 worker and with ``--workers 2`` in the same run,
and the rate at which a producer submits jobs, one per call and in batches, and in batches
through a daemon's API socket against direct submits in the same run."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from swarmd.bench.helpers import (
    COARSE_STEP,
    BenchError,
    Drain,
    all_met,
    await_count,
    floor_throughput,
    ledger_count,
    measure_drain,
    queue_noops,
    readonly_ledger,
    run_uvloop,
    serve_offers_workers,
    target,
    throughput_result,
    workers_targets,
)
from swarmd.client import Client
from swarmd.testing.daemon import LocalDaemon


def _submit_rates(state: Path, single: int = 300, batched: int = 50_000) -> dict[str, float]:
    """Jobs/s submitted one per call, and in calls of 5,000; checks every one was stored."""
    with Client(state) as client:
        started = time.perf_counter()
        for i in range(single):
            client.submit("echo", gid=f"GID-{i}")
        single_rate = single / (time.perf_counter() - started)
        specs = [{"agent": "echo", "gid": f"GID-{i}"} for i in range(min(5000, batched))]
        started = time.perf_counter()
        for _ in range(max(1, batched // len(specs))):
            client.submit_many(specs)
        batched_rate = len(specs) * max(1, batched // len(specs)) / (time.perf_counter() - started)
        stored = client.counts()["ready"]
    expected = single + len(specs) * max(1, batched // len(specs))
    if stored != expected:
        raise BenchError(f"submit: {stored} jobs stored, {expected} submitted")
    return {"single_jobs_per_s": single_rate, "batched_jobs_per_s": batched_rate}


def _socket_submit_rates(state: Path, batched: int = 50_000, batch: int = 5000) -> dict[str, float]:
    """Batched submit through a running daemon's API socket against direct submits to the same
    state, in the same run: rounds alternate between the two, and each rate is the median
    round's (so that load from elsewhere weighs on both alike). The jobs are delayed an hour, so
    that the daemon runs none of them and both measure the submit alone. Checks every job was
    stored."""
    socket_path = state.parent / "api.sock"
    specs = [{"agent": "echo", "gid": f"GID-{i}", "delay": 3600.0} for i in range(min(batch, batched))]
    rounds = max(3, batched // len(specs))
    daemon = LocalDaemon(state, env={"SWARMD_API_SOCKET": str(socket_path)}, log_level="warning").start()
    try:
        with Client(state) as direct, Client(state, socket=socket_path) as through_socket:
            seconds: dict[str, list[float]] = {"direct": [], "socket": []}
            for round_number in range(rounds + 1):  # the first round warms both up
                for name, client in (("direct", direct), ("socket", through_socket)):
                    started = time.perf_counter()
                    client.submit_many(specs)
                    if round_number:
                        seconds[name].append(time.perf_counter() - started)
            stored = direct.counts()["delayed"]
        expected = 2 * len(specs) * (rounds + 1)
        if stored != expected:
            raise BenchError(f"socket submit: {stored} jobs stored, {expected} submitted")
    finally:
        daemon.stop()
    direct_rate = len(specs) / statistics.median(seconds["direct"])
    socket_rate = len(specs) / statistics.median(seconds["socket"])
    return {
        "direct_batched_jobs_per_s_daemon_running": direct_rate,
        "socket_batched_jobs_per_s": socket_rate,
        "socket_to_direct": socket_rate / direct_rate,
    }


def drain_rate(state: Path, n: int, args: Sequence[str] = (), timeout: float = 120.0) -> tuple[Drain, LocalDaemon]:
    """Start a daemon on ``n`` queued jobs and measure its drain (see `Drain`); the caller
    stops the daemon, unless the measure fails: then it is stopped here, never left running."""
    daemon = LocalDaemon(state, *args, log_level="warning").start()
    conn = readonly_ledger(state)
    try:
        drain = measure_drain(
            daemon,
            n,
            lambda: ledger_count(conn) > 0,
            lambda target: await_count(conn, target, timeout, step=COARSE_STEP),
        )
    except BaseException:
        daemon.stop()
        raise
    finally:
        conn.close()
    return drain, daemon


def _verified_drain(jobs: int, args: Sequence[str] = ()) -> Drain:
    """A fresh daemon (started with ``args``) draining ``jobs`` queued no-op jobs, its ledger verified."""
    with tempfile.TemporaryDirectory(prefix="swarmd-bench-") as tmp:
        state = Path(tmp) / "state"
        queue_noops(state, jobs)
        drain, daemon = drain_rate(state, jobs, args)
        with Client(state) as client:
            report = client.verify()
        daemon.stop()
    if not report.ok or report.entries != jobs:
        raise BenchError(f"throughput: ledger has {report.entries} of {jobs} ({report.summary()})")
    return drain


def bench_throughput(jobs: int = 20_000, repeat: int = 3, submit_batched: int = 50_000) -> dict[str, Any]:
    """``repeat`` rounds, each of a drain of ``jobs`` queued no-op jobs by a fresh daemon, one by
    a daemon with ``--workers 2`` (where serve offers it) and a floor, in turn; then the submit
    rates."""
    offered = serve_offers_workers()
    drains: list[Drain] = []
    two: list[Drain] = []
    floor = []
    for _ in range(repeat):
        drains.append(_verified_drain(jobs))
        if offered:
            two.append(_verified_drain(jobs, ("--workers", "2")))
        floor.append(run_uvloop(floor_throughput(jobs, 256)))
    with tempfile.TemporaryDirectory(prefix="swarmd-bench-") as tmp:
        submit = _submit_rates(Path(tmp) / "state", single=min(300, jobs), batched=submit_batched)
    with tempfile.TemporaryDirectory(prefix="swarmd-bench-") as tmp:
        submit.update(_socket_submit_rates(Path(tmp) / "state", batched=submit_batched))
    result = throughput_result(drains, floor)
    targets = [
        target("cpu_per_job", "1 worker: daemon CPU per job <= 2.5x the floor's", result["cpu_ratio"], 2.5),
        *workers_targets(drains, two, offered),
    ]
    return {
        "jobs": jobs,
        **result,
        "workers_2": throughput_result(two, floor) if two else None,
        "submit": submit,
        "targets": targets,
        "met": all_met(targets),
    }
