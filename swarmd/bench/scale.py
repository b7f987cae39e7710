"""The `scale` scenario: a daemon running 100,000 sleepers of 10 s all at once: whether all
are in flight together (``swarmd_concurrent_peak``), how long until they are against a bare
TaskGroup of the same sleeps, and the resident memory per agent above the floor's (the floor
runs in a subprocess of its own, so that its memory is measured alone)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Final

from swarmd.bench.helpers import COARSE_STEP, all_met, await_count, queue_noops, ratio, readonly_ledger, target
from swarmd.testing.daemon import LocalDaemon

#: How long each agent sleeps: long enough for all of them to be in flight at once.
SLEEP_S: Final = 10.0

_FLOOR_SCALE = """
import asyncio, sys, time, uvloop
n, seconds = int(sys.argv[1]), float(sys.argv[2])
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) * 1024
started = [0]
async def sleeper():
    started[0] += 1
    if started[0] == n:
        started.append(time.perf_counter())
    await asyncio.sleep(seconds)
async def main():
    base = rss()
    begun = time.perf_counter()
    tasks = [asyncio.create_task(sleeper()) for _ in range(n)]
    while len(started) == 1:
        await asyncio.sleep(0.01)
    peak = rss()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(started[1] - begun, base, peak)
uvloop.run(main())
"""


def bench_scale(agents: int = 100_000, seconds: float = SLEEP_S) -> dict[str, Any]:
    """``agents`` sleepers of ``seconds`` queued, then run by one daemon allowed to run them all at once."""
    out = subprocess.run(
        [sys.executable, "-c", _FLOOR_SCALE, str(agents), str(seconds)], capture_output=True, text=True, check=True
    ).stdout.split()
    floor_ramp, floor_base, floor_peak = float(out[0]), int(out[1]), int(out[2])
    with tempfile.TemporaryDirectory(prefix="swarmd-bench-") as tmp:
        state = Path(tmp) / "state"
        queue_noops(state, agents, agent="sleep", payload={"seconds": seconds})
        daemon = LocalDaemon(
            state,
            "--max-concurrent",
            str(agents),
            env={"SWARMD_LEASE_SECONDS": str(max(120.0, 10 * seconds))},
            log_level="warning",
        )
        daemon.start()
        conn = readonly_ledger(state)
        base = daemon.rss_bytes()
        await_count(conn, agents, timeout=300 + seconds, step=COARSE_STEP)  # times come from the ledger's records
        peak = daemon.rss_bytes("VmHWM")
        in_flight_peak = int(daemon.metric_totals().get("swarmd_concurrent_peak", 0))
        rows = conn.execute(
            "SELECT min(json_extract(record, '$.reserved_at')), max(json_extract(record, '$.started_at')), "
            "max(json_extract(record, '$.finished_at')) FROM ledger"
        ).fetchone()
        conn.close()
        daemon.stop()
    first_reserved, last_started, last_finished = (float(value) for value in rows)
    ramp = last_started - first_reserved  # from the first reservation until the last agent started
    overhead = (last_finished - first_reserved - seconds) / agents
    # Memory per agent IN FLIGHT: if starting them takes longer than they sleep, they are never
    # all running at once, and dividing by `agents` would flatter the daemon.
    rss_per_agent = (peak - base) / max(1, in_flight_peak)
    floor_rss = (floor_peak - floor_base) / agents
    targets = [
        target("all_in_flight", f"all {agents:,} in flight at once", in_flight_peak / agents, 1.0, at_least=True),
        target("time_to_all_in_flight", "time until all are in flight <= 2x the floor's", ratio(ramp, floor_ramp), 2.0),
        target(
            "rss_above_floor_per_agent", "<= 1 KiB of RSS per agent above the floor's", rss_per_agent - floor_rss, 1024
        ),
    ]
    return {
        "agents": agents,
        "sleep_s": seconds,
        "concurrent_peak": in_flight_peak,
        "swarmd_time_to_all_in_flight_s": ramp,
        "floor_time_to_all_in_flight_s": floor_ramp,
        "swarmd_overhead_per_agent_s": overhead,
        "swarmd_rss_per_agent_bytes": rss_per_agent,
        "floor_rss_per_agent_bytes": floor_rss,
        "rss_above_floor_per_agent_bytes": rss_per_agent - floor_rss,
        "targets": targets,
        "met": all_met(targets),
    }
