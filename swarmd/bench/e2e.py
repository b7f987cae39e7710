"""The `e2e` scenario: round trips of a 50-agent swarm through a SQLite daemon, from the
producer's submit to its 50 results in the producer's hands, against a bare TaskGroup of the
same sleeps plus two durable commits of the swarm's 50 entries (measured alone, in this
process, in the same rounds) and 1 ms."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Final

from swarmd.bench.helpers import (
    BenchError,
    all_met,
    commit_alone,
    e2e_result,
    floor_e2e,
    run_uvloop,
    spread,
    swarm_round_trip,
    target,
)
from swarmd.client import Client
from swarmd.ledger.durable import DurableLedger
from swarmd.testing.daemon import LocalDaemon

#: The allowance of the e2e target beyond the floor and two durable commits.
ALLOWANCE_S: Final = 0.001


def _commit_of_50(ledger: DurableLedger) -> float:
    return run_uvloop(commit_alone(ledger, 50))


def bench_e2e(repeat: int = 20) -> dict[str, Any]:
    """``repeat`` rounds (after three of warm-up), each of a round trip, a floor and a durable
    commit of 50 entries alone, in turn.

    The target: a round trip's overhead <= the floor's + 2 durable commits + 1 ms. The submit
    and the outcomes are each one fsync'd commit at least; the commit is timed on a ledger of
    this process, on the same file system as the daemon's state."""
    ours, submits, wakes, floor, commits = [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="swarmd-bench-") as tmp:
        state = Path(tmp) / "state"
        ledger = DurableLedger(Path(tmp) / "commits.db")
        # The waits are woken by the daemon's commits, through its API socket (no polling).
        with LocalDaemon(state, log_level="warning"), Client(state) as client:
            for round_ in range(repeat + 3):
                trip = swarm_round_trip(client)
                floor_s = floor_e2e()
                commit_s = _commit_of_50(ledger)
                if round_ >= 3:
                    ours.append(trip.overhead)
                    submits.append(trip.submit)
                    wakes.append(trip.wake)
                    floor.append(floor_s)
                    commits.append(commit_s)
            report = client.verify()
        run_uvloop(ledger.close())
    if not report.ok or report.entries != 50 * (repeat + 3):
        raise BenchError(f"e2e: ledger has {report.entries} entries ({report.summary()})")
    result = e2e_result(ours, floor, submits, wakes)
    commit = spread(commits)
    bound = result["floor_overhead_s"]["median"] + 2 * commit["median"] + ALLOWANCE_S
    measured = result["swarmd_overhead_s"]["median"] / bound
    targets = [target("overhead", "overhead <= floor + 2 durable commits of 50 entries + 1 ms", measured, 1.0)]
    return {**result, "commit_s": commit, "bound_s": bound, "targets": targets, "met": all_met(targets)}
