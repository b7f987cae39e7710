"""The `e2e` scenario: round trips of a 50-agent swarm through a SQLite daemon, from the
producer's submit to the 50th ledger entry, against a bare TaskGroup of the same sleeps."""

from __future__ import annotations

import tempfile
from functools import partial
from pathlib import Path
from typing import Any

from swarmd.bench.helpers import BenchError, e2e_result, floor_e2e, ledger_count, readonly_ledger, swarm_round_trips
from swarmd.client import Client
from swarmd.testing.daemon import LocalDaemon


def bench_e2e(repeat: int = 20) -> dict[str, Any]:
    """``repeat`` round trips (after three of warm-up) and as many floors."""
    with tempfile.TemporaryDirectory(prefix="swarmd-bench-") as tmp:
        state = Path(tmp) / "state"
        with LocalDaemon(state, log_level="warning"), Client(state) as client:
            conn = readonly_ledger(state)
            ours, submits = swarm_round_trips(client, partial(ledger_count, conn), repeat)
            floor = [floor_e2e() for _ in range(repeat)]
            report = client.verify()
            conn.close()
    if not report.ok or report.entries != 50 * (repeat + 3):
        raise BenchError(f"e2e: ledger has {report.entries} entries ({report.summary()})")
    return e2e_result(ours, floor, submits)
