"""The `throughput` scenario: a SQLite daemon draining queued no-op jobs against bare asyncio
tasks, and the rate at which a producer submits jobs, one per call and in batches, and in
batches through a daemon's API socket against direct submits in the same run."""

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
    await_count,
    floor_throughput,
    ledger_count,
    measure_drain,
    queue_noops,
    readonly_ledger,
    run_uvloop,
    throughput_result,
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


def bench_throughput(jobs: int = 20_000, repeat: int = 3, submit_batched: int = 50_000) -> dict[str, Any]:
    """``repeat`` drains of ``jobs`` queued no-op jobs, each by a fresh daemon, against as many
    floors; then the submit rates."""
    drains = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="swarmd-bench-") as tmp:
            state = Path(tmp) / "state"
            queue_noops(state, jobs)
            drain, daemon = drain_rate(state, jobs)
            with Client(state) as client:
                report = client.verify()
            daemon.stop()
            if not report.ok or report.entries != jobs:
                raise BenchError(f"throughput: ledger has {report.entries} of {jobs} ({report.summary()})")
            drains.append(drain)
    with tempfile.TemporaryDirectory(prefix="swarmd-bench-") as tmp:
        submit = _submit_rates(Path(tmp) / "state", single=min(300, jobs), batched=submit_batched)
    with tempfile.TemporaryDirectory(prefix="swarmd-bench-") as tmp:
        submit.update(_socket_submit_rates(Path(tmp) / "state", batched=submit_batched))
    floor = [run_uvloop(floor_throughput(jobs, 256)) for _ in range(repeat)]
    result = throughput_result(drains, floor)
    return {
        "jobs": jobs,
        **result,
        "submit": submit,
        "met": result["swarmd_jobs_per_s"]["median"] >= 25_000
        and submit["batched_jobs_per_s"] >= 100_000
        and submit["socket_to_direct"] >= 0.5,
    }
