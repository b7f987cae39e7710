"""What every `swarmd bench` scenario measures with: statistics over samples, the bare-asyncio
floors, watching a ledger grow, timing a daemon's drain, and a description of the machine.

Scenarios import this module and nothing of each other; the runner imports the scenarios.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, Final, NamedTuple, TypeVar

import uvloop

from swarmd.client import Client
from swarmd.errors import BenchError as BenchError  # noqa: PLC0414 - the scenarios import it from here
from swarmd.ledger.durable import DurableLedger
from swarmd.testing.daemon import LocalDaemon
from swarmd.testing.polling import WaitTimeout, wait_until

T = TypeVar("T")

#: How long each agent of a measured swarm sleeps.
AGENT_SECONDS: Final = 0.01
#: Pause between two looks at the ledger. A round trip needs fine steps; a drain of a second
#: or more does not, and on a 2-core machine a watcher looking every 100 us takes CPU from the
#: daemon it watches (measured: -15% SQLite drain rate against 1 ms steps).
FINE_STEP: Final = 0.0001
COARSE_STEP: Final = 0.001


def run_uvloop(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a fresh uvloop event loop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


# -- statistics ----------------------------------------------------------------------------
def spread(samples: Sequence[float]) -> dict[str, float]:
    """Median, 10th and 90th percentile, min and max of the samples."""
    ordered = sorted(samples)
    if not ordered:
        raise BenchError("no samples")

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]

    return {
        "median": statistics.median(ordered),
        "p10": pct(0.1),
        "p90": pct(0.9),
        "min": ordered[0],
        "max": ordered[-1],
        "n": float(len(ordered)),
    }


def ratio(value: float, floor: float) -> float | None:
    """value / floor, or None (JSON null) when the floor is not positive."""
    return value / floor if floor > 0 else None


# -- targets -------------------------------------------------------------------------------
def target(
    name: str, text: str, measured: float | None, limit: float, *, at_least: bool = False, why_unmeasured: str = ""
) -> dict[str, Any]:
    """One target of a scenario, as the JSON reports it: what it asks (``text``), the ratio
    measured in this run, its ``limit`` (at most, or ``at_least``) and ``met``: true, false, or
    null when it could not be measured in this run (``why_unmeasured`` says why)."""
    met: bool | None = None
    if measured is not None:
        met = measured >= limit if at_least else measured <= limit
    row: dict[str, Any] = {
        "name": name,
        "target": text,
        "measured": measured,
        "limit": limit,
        "at_least": at_least,
        "met": met,
    }
    if measured is None:
        row["why_unmeasured"] = why_unmeasured or "not measured"
    return row


def all_met(targets: Sequence[dict[str, Any]]) -> bool | None:
    """A scenario's ``met``: false if any target is unmet, null if none is unmet but some could
    not be measured, else true."""
    values = [row["met"] for row in targets]
    if any(value is False for value in values):
        return False
    return None if any(value is None for value in values) else True


def serve_offers_workers() -> bool:
    """Whether this swarmd's ``swarmd serve`` takes ``--workers N`` (its ``--help`` says so)."""
    out = subprocess.run(
        [sys.executable, "-m", "swarmd", "serve", "--help"], capture_output=True, text=True, check=False
    ).stdout
    return "--workers" in out


#: Why the ``--workers 2`` targets read null where serve has no such option.
NO_WORKERS: Final = "this swarmd's `serve` has no --workers option"


# -- the floors: the same work with nothing but asyncio on uvloop ---------------------------
async def floor_swarm(n: int) -> float:
    """Wall seconds of ``n`` sleeps of `AGENT_SECONDS` in one bare TaskGroup."""
    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(n):
            group.create_task(asyncio.sleep(AGENT_SECONDS))
    return time.perf_counter() - started


def floor_e2e() -> float:
    """The floor of one 50-agent swarm: a bare TaskGroup of the same sleeps (wall - 10 ms)."""
    return run_uvloop(floor_swarm(50)) - AGENT_SECONDS


class FloorRun(NamedTuple):
    """The floor of a drain: tasks per second, and the CPU this process spent per task."""

    jobs_per_s: float
    cpu_per_job_s: float


async def floor_throughput(n: int, limit: int) -> FloorRun:
    """``n`` no-op tasks, at most ``limit`` at a time: their rate and CPU per task."""
    slots = asyncio.Semaphore(limit)

    async def noop() -> None:
        async with slots:
            await asyncio.sleep(0)

    started, cpu = time.perf_counter(), time.process_time()
    async with asyncio.TaskGroup() as group:
        for _ in range(n):
            group.create_task(noop())
    return FloorRun(n / (time.perf_counter() - started), (time.process_time() - cpu) / n)


async def commit_alone(ledger: DurableLedger, n: int) -> float:
    """One group commit of ``n`` entries like a swarm's, with nothing else running: appended
    together, timed until the last index comes back (the hand-off to the SQLite thread, the
    chain, the insert and the fsync'd COMMIT)."""
    entries = [{"agent_gid": f"GID-{i}", "task": f"commit-{i}", "outcome": "succeeded"} for i in range(n)]
    started = time.perf_counter()
    committed = [ledger.append_soon(entry) for entry in entries]
    indices = [await future for future in committed]  # as the dispatcher awaits them
    wall = time.perf_counter() - started
    if len(set(indices)) != n:
        raise BenchError(f"a commit of {n} entries returned {len(set(indices))} indices")
    return wall


# -- watching a ledger ---------------------------------------------------------------------
def readonly_ledger(state: Path) -> sqlite3.Connection:
    """A read-only connection to the SQLite database of the daemon on ``state``."""
    return sqlite3.connect(f"file:{state / 'swarmd.db'}?mode=ro", uri=True, timeout=30)


def ledger_count(conn: sqlite3.Connection) -> int:
    """Entries in the ledger. Its indices run 0, 1, 2... without gaps, so this is the last
    index + 1: an O(log n) look-up, where count(*) would scan an index (the bench verifies the
    chain, gaps included, once the work is done)."""
    return int(conn.execute("SELECT coalesce(max(idx) + 1, 0) FROM ledger").fetchone()[0])


def await_entries(length: Callable[[], int], target: int, timeout: float = 120.0, step: float = FINE_STEP) -> float:
    """Look every ``step`` seconds until ``length()`` reaches ``target`` ledger entries; return
    when (`time.perf_counter`). `BenchError` if ``timeout`` seconds pass first."""
    try:
        wait_until(lambda: length() >= target, timeout=timeout, what=f"{target} ledger entries", step=step)
    except WaitTimeout as exc:
        raise BenchError(f"ledger did not reach {target} entries in {timeout:.0f}s") from exc
    return time.perf_counter()


def await_count(conn: sqlite3.Connection, target: int, timeout: float = 120.0, step: float = FINE_STEP) -> float:
    """`await_entries` on the SQLite ledger behind ``conn``."""
    return await_entries(lambda: ledger_count(conn), target, timeout, step)


# -- round trips of a swarm through a daemon -----------------------------------------------
class RoundTrip(NamedTuple):
    """One round trip of a 50-agent swarm: wall - 10 ms, the submit call, last commit -> waiter awake."""

    overhead: float
    submit: float
    wake: float


#: The swarm of a round trip: 50 agents sleeping `AGENT_SECONDS`.
SWARM_SPECS: Final = [{"agent": "sleep", "gid": f"GID-{i}", "payload": {"seconds": AGENT_SECONDS}} for i in range(50)]


def swarm_round_trip(client: Client) -> RoundTrip:
    """A 50-agent swarm of `AGENT_SECONDS` sleeps, submitted by ``client``, until all 50 results
    are in its hands (`Submitted.wait`): the wall - 10 ms, how long the submit call took, and
    how long after the last outcome's commit (its ``finished_at``) the waiter woke."""
    started = time.perf_counter()
    swarm = client.submit_many(SWARM_SPECS, swarm=True)
    submitted = time.perf_counter()
    results = swarm.wait(timeout=60)
    done, woke = time.perf_counter(), time.time()
    if len(results) != 50 or not all(result.ok for result in results):
        raise BenchError(f"e2e: {sum(not result.ok for result in results)} of the swarm's 50 jobs failed")
    return RoundTrip(done - started - AGENT_SECONDS, submitted - started, woke - max(r.finished_at for r in results))


def swarm_round_trips(client: Client, repeat: int) -> tuple[list[float], list[float], list[float]]:
    """``repeat`` `swarm_round_trip`s after three of warm-up (not counted): their overheads,
    submit calls and wakes."""
    for _ in range(3):
        swarm_round_trip(client)
    trips = [swarm_round_trip(client) for _ in range(repeat)]
    return [t.overhead for t in trips], [t.submit for t in trips], [t.wake for t in trips]


def e2e_result(ours: list[float], floor: list[float], submits: list[float], wakes: list[float]) -> dict[str, Any]:
    """A 50-agent-swarm round trip (submit -> 50 results in the producer's hands) against the
    bare floor. Overheads are wall - 10 ms; the floor's can be slightly negative (the loop's
    timers have 1 ms granularity), so the ratio compares whole walls. ``submits``: how long the
    producer's durable submit call took, the first part of each round trip; ``wakes``: from the
    last outcome's commit to the waiter waking, the last part."""
    s, f = spread(ours), spread(floor)
    return {
        "swarmd_overhead_s": s,
        "floor_overhead_s": f,
        "submit_s": spread(submits),
        "commit_to_wake_s": spread(wakes),
        "wall_ratio": (s["median"] + AGENT_SECONDS) / (f["median"] + AGENT_SECONDS),
    }


# -- drains --------------------------------------------------------------------------------
def queue_noops(state: Path, n: int, agent: str = "echo", payload: Any = None) -> None:
    """Queue ``n`` jobs of ``agent`` on the SQLite queue of ``state``, in batches of 5,000."""
    with Client(state) as client:
        for start in range(0, n, 5000):
            client.submit_many(
                [{"agent": agent, "gid": f"GID-{i}", "payload": payload} for i in range(start, min(n, start + 5000))]
            )


class Drain(NamedTuple):
    """One daemon draining a queue: jobs/s from its first to its last ledger commit, and the
    CPU it used meanwhile (per job, and in cores: 1.0 is one core busy the whole time)."""

    jobs_per_s: float
    cpu_per_job_s: float
    cores: float


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of process ``pid`` and of its descendants alive now (``/proc/PID/schedstat``,
    every thread's nanoseconds): a daemon with ``--workers N`` runs its workers as children."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, ()))
        with contextlib.suppress(OSError, ValueError, IndexError):  # a process or thread that just ended
            for task in Path(f"/proc/{current}/task").iterdir():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def measure_drain(
    daemon: LocalDaemon, n: int, started: Callable[[], bool], count_until: Callable[[int], float]
) -> Drain:
    """Time a started daemon's drain of ``n`` jobs: from when ``started()`` first holds to
    ``count_until(n)``, with the CPU time of the daemon and its children over the same span."""
    wait_until(started, timeout=60, what="the first commit", step=0.0001)
    first, cpu_first = time.perf_counter(), tree_cpu_seconds(daemon.pid)
    last = count_until(n)
    cpu = tree_cpu_seconds(daemon.pid) - cpu_first
    if cpu <= 0 or last <= first:  # a 0 would read as a met CPU target: refuse it instead
        raise BenchError(
            f"the drain of {n:,} jobs ended before the bench saw its first commit (a loaded machine, or too "
            "few jobs): nothing to measure; run more jobs"
        )
    return Drain(n / (last - first), cpu / n, cpu / (last - first))


def throughput_result(drains: Sequence[Drain], floor: Sequence[FloorRun]) -> dict[str, Any]:
    """Drain rates against the floor's, with the CPU the daemon spent per job (a figure that
    other load on the machine disturbs far less than a rate) against the floor's."""
    s, f = spread([d.jobs_per_s for d in drains]), spread([run.jobs_per_s for run in floor])
    cpu, floor_cpu = spread([d.cpu_per_job_s for d in drains]), spread([run.cpu_per_job_s for run in floor])
    return {
        "swarmd_jobs_per_s": s,
        "floor_jobs_per_s": f,
        "ratio": ratio(f["median"], s["median"]),
        "cpu_per_job_s": cpu,
        "floor_cpu_per_job_s": floor_cpu,
        "cpu_ratio": ratio(cpu["median"], floor_cpu["median"]),
        "cores": spread([d.cores for d in drains]),
    }


def workers_targets(one: Sequence[Drain], two: Sequence[Drain], offered: bool) -> list[dict[str, Any]]:
    """The ``--workers 2`` targets against 1 worker in the same run: >= 1.3x the rate, <= 1.1x
    the CPU per job (null, with the reason, where serve has no --workers)."""
    rate = cpu = None
    if offered and two:
        rate = ratio(spread([d.jobs_per_s for d in two])["median"], spread([d.jobs_per_s for d in one])["median"])
        cpu = ratio(spread([d.cpu_per_job_s for d in two])["median"], spread([d.cpu_per_job_s for d in one])["median"])
    why = "" if offered else NO_WORKERS
    return [
        target("workers2_rate", "--workers 2: >= 1.3x the 1-worker rate", rate, 1.3, at_least=True, why_unmeasured=why),
        target("workers2_cpu", "--workers 2: CPU per job <= 1.1x 1 worker's", cpu, 1.1, why_unmeasured=why),
    ]


# -- the machine ---------------------------------------------------------------------------
def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo, if it says."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def python_loop_seconds(iterations: int = 1_000_000, best_of: int = 3) -> float:
    """Seconds this machine takes for a fixed pure-Python loop (best of ``best_of``).

    The floors run mostly in C (uvloop, asyncio's C tasks), swarmd mostly in Python bytecode:
    a machine slow at bytecode moves swarmd's figures much more than the floor's, so runs on
    different machines are comparable only with this beside them."""
    best = float("inf")
    for _ in range(best_of):
        started = time.perf_counter()
        total = 0
        for i in range(iterations):
            total += i
        best = min(best, time.perf_counter() - started)
    return best


def machine() -> dict[str, Any]:
    """The machine a run measured, reported beside every scenario's result."""
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu_model(),
        "python": sys.version.split()[0],
        "platform": sys.platform,
        "sqlite": sqlite3.sqlite_version,
        "python_loop_s": python_loop_seconds(),
        "date": time.strftime("%Y-%m-%d"),
    }
