"""The `e2e` scenario: round trips of a 50-agent swarm through a SQLite daemon, from the
producer's submit to its 50 results in the producer's hands, against a bare TaskGroup of the
same sleeps."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from swarmd.bench.helpers import BenchError, e2e_result, floor_e2e, swarm_round_trips
from swarmd.client import Client
from swarmd.testing.daemon import LocalDaemon


def bench_e2e(repeat: int = 20) -> dict[str, Any]:
    """``repeat`` round trips (after three of warm-up) and as many floors."""
    with tempfile.TemporaryDirectory(prefix="swarmd-bench-") as tmp:
        state = Path(tmp) / "state"
        # The waits are woken by the daemon's commits, through its API socket (no polling).
        with LocalDaemon(state, log_level="warning"), Client(state) as client:
            ours, submits, wakes = swarm_round_trips(client, repeat)
            floor = [floor_e2e() for _ in range(repeat)]
            report = client.verify()
    if not report.ok or report.entries != 50 * (repeat + 3):
        raise BenchError(f"e2e: ledger has {report.entries} entries ({report.summary()})")
    return e2e_result(ours, floor, submits, wakes)
