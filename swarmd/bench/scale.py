"""The `scale` scenario: a daemon running a large swarm of 1 s sleepers all at once, its
overhead and resident memory per agent against a bare TaskGroup of the same sleeps (run in a
subprocess of its own, so that its memory is measured alone)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from swarmd.bench.helpers import COARSE_STEP, await_count, queue_noops, ratio, readonly_ledger
from swarmd.testing.daemon import LocalDaemon

_FLOOR_SCALE = """
import asyncio, sys, time, uvloop
n = int(sys.argv[1])
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) * 1024
async def main():
    base = rss()
    peak = base
    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(n):
            group.create_task(asyncio.sleep(1.0))
        await asyncio.sleep(0.5)
        peak = rss()
    print(time.perf_counter() - started - 1.0, base, peak)
uvloop.run(main())
"""


def bench_scale(agents: int = 100_000) -> dict[str, Any]:
    """``agents`` sleepers of 1 s queued, then run by one daemon allowed to run them all at once."""
    out = subprocess.run(
        [sys.executable, "-c", _FLOOR_SCALE, str(agents)], capture_output=True, text=True, check=True
    ).stdout.split()
    floor_overhead, floor_base, floor_peak = float(out[0]), int(out[1]), int(out[2])
    with tempfile.TemporaryDirectory(prefix="swarmd-bench-") as tmp:
        state = Path(tmp) / "state"
        queue_noops(state, agents, agent="sleep", payload={"seconds": 1.0})
        daemon = LocalDaemon(
            state, "--max-concurrent", str(agents), env={"SWARMD_LEASE_SECONDS": "120"}, log_level="warning"
        )
        daemon.start()
        conn = readonly_ledger(state)
        base = daemon.rss_bytes()
        await_count(conn, agents, timeout=300, step=COARSE_STEP)  # the wall comes from the ledger's own times
        peak = daemon.rss_bytes("VmHWM")
        in_flight_peak = int(daemon.metric_totals().get("swarmd_concurrent_peak", 0))
        rows = conn.execute(
            "SELECT min(json_extract(record, '$.reserved_at')), max(json_extract(record, '$.finished_at')) FROM ledger"
        ).fetchone()
        conn.close()
        daemon.stop()
    wall = float(rows[1]) - float(rows[0])
    overhead = (wall - 1.0) / agents
    floor_per_agent = max(floor_overhead, 1e-9) / agents
    # Memory per agent IN FLIGHT: if starting them takes longer than they sleep, they are never
    # all running at once, and dividing by `agents` would flatter the daemon.
    rss_per_agent = (peak - base) / max(1, in_flight_peak)
    floor_rss = (floor_peak - floor_base) / agents
    return {
        "agents": agents,
        "concurrent_peak": in_flight_peak,
        "swarmd_overhead_per_agent_s": overhead,
        "floor_overhead_per_agent_s": floor_per_agent,
        "ratio": ratio(overhead, floor_per_agent),
        "swarmd_rss_per_agent_bytes": rss_per_agent,
        "floor_rss_per_agent_bytes": floor_rss,
        "rss_above_floor_per_agent_bytes": rss_per_agent - floor_rss,
        "met": overhead <= 2 * floor_per_agent and rss_per_agent - floor_rss <= 2048 and in_flight_peak == agents,
    }
