"""`swarmd bench SCENARIO [--json]`: runs scenarios and reports them, one JSON object or one
summary per scenario; `swarmd bench all --json` runs every scenario in one process run and
prints ONE JSON document: the machine, the command, each scenario's result and every target.

Every scenario measures swarmd and the floor (the same work with nothing but asyncio on
uvloop) alternately in one process run, after a warm-up, and reports medians, spreads and
the ratio. Each result carries ``targets``: what each target asks, the ratio (or figure)
measured in this run, its limit and ``met`` (true, false, or null with ``why_unmeasured``);
the result's own ``met`` is false if any target is unmet. Each also checks that it measured
what it claims (every job in the ledger, the chain verified), and fails loudly rather than
report a number for work that did not happen. The scenarios live one per module beside this
one; what they share is in `helpers`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import msgspec

from swarmd.bench.e2e import bench_e2e
from swarmd.bench.helpers import all_met, machine, ratio
from swarmd.bench.instrumentation import bench_instrumentation
from swarmd.bench.scale import bench_scale
from swarmd.bench.soak import ROUNDS as SOAK_ROUNDS
from swarmd.bench.soak import bench_soak
from swarmd.bench.swarm import bench_swarm
from swarmd.bench.throughput import bench_throughput

#: The scenarios in the order "all" runs them.
SCENARIOS: Final = ("swarm", "e2e", "throughput", "scale", "instrumentation", "redis-throughput", "redis-e2e", "soak")
#: What each scenario aims for, reported beside its result.
TARGETS: Final = {
    "swarm": "50 agents: in-memory ledger <= 1.3x floor; durable ledger <= 1.15x (floor + one durable commit)",
    "e2e": "50 agents, submit -> all results in the producer's hands: <= floor + 2 durable commits + 1 ms",
    "throughput": "daemon CPU per job <= 2.5x the floor's; --workers 2: >= 1.3x the rate, CPU per job <= 1.1x",
    "scale": "100,000 agents of 10 s all in flight at once, within 2x the floor's time; <= 1 KiB RSS/agent above it",
    "instrumentation": "extra CPU per job over no-op telemetry: no exporter <= 3 us; 1-in-10 sampled <= 10 us",
    "redis-throughput": ">= 15,000 jobs/s; --workers 2: >= 1.3x the rate, CPU per job <= 1.1x",
    "redis-e2e": "overhead <= 3 ms (reference: taskiq 13.5 ms)",
    "soak": "RSS flat after warm-up (within 5%); /metrics and /healthz answer 200 within 100 ms throughout; "
    "throughput with retention on >= 0.9 x off (median of paired rounds); housekeeping adds <= 5 ms to the hot "
    "path's p50 and p99 group commit",
}


def _bench_redis_throughput(jobs: int, repeat: int) -> dict[str, Any]:
    from swarmd.bench.redis import bench_redis_throughput  # noqa: PLC0415 - needs the redis extra and a server

    return bench_redis_throughput(jobs, repeat)


def _bench_redis_e2e(repeat: int) -> dict[str, Any]:
    from swarmd.bench.redis import bench_redis_e2e  # noqa: PLC0415 - needs the redis extra and a server

    return bench_redis_e2e(repeat)


def run_scenario(
    name: str, *, agents: Sequence[int] | None = None, jobs: int | None = None, repeat: int | None = None
) -> dict[str, Any]:
    """Run scenario ``name`` (one of `SCENARIOS`; a size not given takes the scenario's default)
    and return its result with its name, target and the seconds it took."""
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "swarm": lambda: bench_swarm(agents or (50, 100, 1000), repeat or 30),
        "e2e": lambda: bench_e2e(repeat or 20),
        "throughput": lambda: bench_throughput(jobs or 20_000, repeat or 3),
        "scale": lambda: bench_scale(jobs or 100_000),
        "instrumentation": lambda: bench_instrumentation(jobs or 10_000, repeat or 6),
        "redis-throughput": lambda: _bench_redis_throughput(jobs or 20_000, repeat or 3),
        "redis-e2e": lambda: _bench_redis_e2e(repeat or 20),
        "soak": lambda: bench_soak(jobs or 1_000_000, rounds=repeat or SOAK_ROUNDS),
    }
    started = time.perf_counter()
    result = runners[name]()
    return {"scenario": name, "target": TARGETS[name], **result, "seconds": time.perf_counter() - started}


def _times(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _met_word(met: bool | None) -> str:
    return {True: "met", False: "NOT met", None: "not measured"}[met]


def target_lines(result: dict[str, Any]) -> str:
    """One line per target of a result: what it asks, what this run measured, met or not."""
    lines = []
    for row in result.get("targets", []):
        measured = row["measured"]
        figure = "n/a" if measured is None else f"{measured:.4g}"
        why = f" ({row['why_unmeasured']})" if row["met"] is None else ""
        bound = ">=" if row["at_least"] else "<="
        lines.append(f"  target {row['target']}: {figure} ({bound} {row['limit']:g}) {_met_word(row['met'])}{why}")
    return "\n".join(lines)


def _retention_cost(cost: dict[str, Any]) -> str:
    """The soak's in-process cost of retention against the hot path's, per job, on the backend."""
    hot = ", ".join(f"{name} {us:.1f}" for name, us in cost["hot_path_us_per_job"].items())
    kept = ", ".join(f"{name} {us:.1f}" for name, us in cost["retention_us_per_job"].items())
    return (
        f"\n  per job on the backend (in process, {cost['jobs']:,} jobs): hot path {cost['hot_us']:.1f} us ({hot}); "
        f"retention {cost['retention_us']:.1f} us ({kept}): on/off bound {cost['serial_bound']:.3f}"
    )


def _retention_rounds(rounds: dict[str, Any]) -> str:
    """The soak's paired rounds of retention on against off, of one workload (no-op jobs, or
    jobs that leave the backend room)."""
    live = ", ".join(f"{pair['on_live_entries']:,}" for pair in rounds["retention_rounds"])
    return (
        f"\n  retention on/off with {rounds['retention_workload']} jobs: median ratio "
        f"{rounds['retention_median_ratio']:.3f} over {len(rounds['retention_rounds'])} paired rounds of "
        f"{rounds['retention_round_jobs']:,} jobs (entries live at the end with retention on: {live})"
    )


def summary(result: dict[str, Any]) -> str:
    """A scenario's result as a few lines for a reader, its targets last; JSON for a scenario
    without a summary."""
    text = _summary(result)
    targets = target_lines(result)
    return f"{text}\n{targets}" if targets else text


def _summary(result: dict[str, Any]) -> str:
    name = result["scenario"]
    met = "met where measured" if "met" in result and result["met"] is None else _met_word(bool(result.get("met")))
    if name == "swarm":
        lines = [f"swarm ({met}: {result['target']})"]
        for row in result["sizes"]:
            s, f = row["swarmd_overhead_s"], row["floor_overhead_s"]
            bare, commit, one = row["no_ledger_overhead_s"], row["commit_s"], row["commit_one_s"]
            lines.append(
                f"  {row['agents']:>5} agents: overhead {s['median'] * 1e3:.3f} ms "
                f"[p10 {s['p10'] * 1e3:.3f}, p90 {s['p90'] * 1e3:.3f}] vs floor {f['median'] * 1e3:.3f} ms "
                f"-> {_times(row['ratio'])}\n"
                f"         in-memory ledger {row['memory_ledger_overhead_s']['median'] * 1e3:.3f} ms "
                f"({_times(row['memory_ratio'])}); durable to (floor + commit) {_times(row['durable_to_bound'])}\n"
                f"         made of: dispatcher without a ledger {bare['median'] * 1e3:.3f} ms "
                f"({_times(ratio(bare['median'], f['median']))}); one durable commit of {row['agents']} entries "
                f"alone {commit['median'] * 1e3:.3f} ms (of 1 entry {one['median'] * 1e3:.3f} ms); "
                f"floor + commit {_times(row['commit_bound_ratio'])}"
            )
        return "\n".join(lines)
    if name in ("e2e", "redis-e2e"):
        s, f = result["swarmd_overhead_s"], result["floor_overhead_s"]
        return (
            f"{name} ({met}: {result['target']})\n  50-agent swarm of 10 ms agents through the queue: overhead "
            f"{s['median'] * 1e3:.2f} ms [p10 {s['p10'] * 1e3:.2f}, p90 {s['p90'] * 1e3:.2f}]; bare TaskGroup floor "
            f"{f['median'] * 1e3:.2f} ms; whole wall {result['wall_ratio']:.2f}x the floor's\n"
            f"  of which the durable submit call {result['submit_s']['median'] * 1e3:.2f} ms, and from the last "
            f"outcome (its finished_at, before its group commit) to the waiter waking "
            f"{result['commit_to_wake_s']['median'] * 1e3:.2f} ms "
            f"[p90 {result['commit_to_wake_s']['p90'] * 1e3:.2f}]"
            + (
                f"\n  one durable commit of 50 entries alone {result['commit_s']['median'] * 1e3:.2f} ms: bound "
                f"(floor + 2 commits + 1 ms) {result['bound_s'] * 1e3:.2f} ms"
                if "bound_s" in result
                else ""
            )
        )
    if name in ("throughput", "redis-throughput"):
        s, f = result["swarmd_jobs_per_s"], result["floor_jobs_per_s"]
        line = (
            f"{name} ({met}: {result['target']})\n  drain {result['jobs']:,} no-op jobs: "
            f"{s['median']:,.0f} jobs/s [min {s['min']:,.0f}, max {s['max']:,.0f}] vs floor "
            f"{f['median']:,.0f} jobs/s (floor/swarmd {_times(result['ratio'])}); the daemon used "
            f"{result['cpu_per_job_s']['median'] * 1e6:.1f} us of CPU per job, {result['cores']['median']:.2f} cores; "
            f"the floor {result['floor_cpu_per_job_s']['median'] * 1e6:.1f} us ({_times(result['cpu_ratio'])})"
        )
        two = result.get("workers_2")
        if two:
            line += (
                f"\n  --workers 2: {two['swarmd_jobs_per_s']['median']:,.0f} jobs/s, "
                f"{two['cpu_per_job_s']['median'] * 1e6:.1f} us of CPU per job, {two['cores']['median']:.2f} cores"
            )
        submit = result.get("submit")
        if submit:
            line += (
                f"\n  submit: single {submit['single_jobs_per_s']:,.0f} jobs/s, batched "
                f"{submit['batched_jobs_per_s']:,.0f} jobs/s"
            )
            if "socket_to_direct" in submit:
                line += (
                    f"\n  batched submit through the API socket {submit['socket_batched_jobs_per_s']:,.0f} jobs/s vs "
                    f"direct {submit['direct_batched_jobs_per_s_daemon_running']:,.0f} jobs/s with the daemon running: "
                    f"{submit['socket_to_direct']:.2f}x (target >= 0.5x)"
                )
        return line
    if name == "scale":
        return (
            f"scale ({met}: {result['target']})\n  {result['agents']:,} sleepers of {result['sleep_s']:g} s: "
            f"at most {result['concurrent_peak']:,} in flight at once; all started "
            f"{result['swarmd_time_to_all_in_flight_s']:.2f} s after the first reservation vs floor "
            f"{result['floor_time_to_all_in_flight_s']:.2f} s; RSS "
            f"{result['swarmd_rss_per_agent_bytes'] / 1024:.2f} KiB per agent in flight vs floor "
            f"{result['floor_rss_per_agent_bytes'] / 1024:.2f} KiB/agent"
        )
    if name == "soak":
        m, h, mib = result["metrics_latency_s"], result["healthz_latency_s"], 1024 * 1024
        return (
            f"soak ({met}: {result['target']})\n  {result['jobs']:,} no-op jobs in {result['wall_s']:.0f} s "
            f"({result['jobs_per_s']:,.0f} jobs/s), {result['samples']} samples: RSS "
            f"{result['rss_warm_bytes'] / mib:.1f} MiB after warm-up, {result['rss_mid_bytes'] / mib:.1f} MiB "
            f"mid-run, {result['rss_end_bytes'] / mib:.1f} MiB at the end "
            f"({result['rss_growth_after_warmup']:+.1%}; max {result['rss_max_after_warmup_bytes'] / mib:.1f} MiB)\n"
            f"  /metrics max {m['max'] * 1e3:.1f} ms (median {m['median'] * 1e3:.1f}), /healthz max "
            f"{h['max'] * 1e3:.1f} ms (median {h['median'] * 1e3:.1f}); {result['failed_samples']} samples not 200\n"
            f"  state {sum(result['state_bytes_before'].values()) / mib:.1f} MiB before, "
            f"{sum(result['state_bytes_after'].values()) / mib:.1f} MiB after "
            f"({result['state_bytes_per_job']:.0f} bytes/job: {result['state_bytes_after']})"
            + (_retention_rounds(result) if "retention_rounds" in result else "")
            + (_retention_cost(result["retention_cost"]) if "retention_cost" in result else "")
            + (_retention_rounds(result["retention_paced"]) if "retention_paced" in result else "")
            + "".join(
                f"\n  upkeep holds, {step}: {row['count']} steps, "
                + (
                    f"{row['within_target_share']:.1%} within 5 ms, slowest under {row['highest_bucket_s'] * 1e3:g} ms"
                    if row["count"]
                    else "none ran"
                )
                for step, row in result.get("upkeep_holds", {}).items()
            )
        )
    if name == "instrumentation":
        per, extra = result["per_job_s"], result["extra_cpu_per_job_s"]
        return (
            f"instrumentation ({met}: {result['target']})\n"
            f"  CPU per job (median of {result['rounds']} rounds): none {per['none'] * 1e6:.1f} us; metrics + logs + "
            f"tracing without exporter {per['default'] * 1e6:.1f} us; with a sampled exporter (1 in 10) "
            f"{per['sampled'] * 1e6:.1f} us; every job traced {per['full'] * 1e6:.1f} us\n"
            f"  extra over none, paired within each round (median): without exporter {extra['default'] * 1e6:.1f} us, "
            f"sampled {extra['sampled'] * 1e6:.1f} us, every job traced {extra['full'] * 1e6:.1f} us (reference)"
        )
    return msgspec.json.encode(result).decode()


def run_bench(
    scenario: str,
    *,
    as_json: bool = False,
    agents: Sequence[int] | None = None,
    jobs: int | None = None,
    repeat: int | None = None,
) -> int:
    """`swarmd bench`: run ``scenario`` (or "all" of them), print each result; the exit code:
    0, 1 if a scenario could not run, 2 for an unknown scenario."""
    names = SCENARIOS if scenario == "all" else (scenario,)
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        print(
            f"swarmd: error: unknown scenario {unknown[0]!r} (choose from {', '.join(SCENARIOS)}, all)", file=sys.stderr
        )
        return 2
    description = machine()
    document = scenario == "all" and as_json  # one JSON document for the whole run
    results: list[dict[str, Any]] = []
    began = time.perf_counter()
    if not as_json:
        print(
            f"swarmd bench on {description['cpus']} CPUs ({description['cpu'] or 'unknown model'}), Python "
            f"{description['python']}, SQLite {description['sqlite']}, {description['date']}; a 1,000,000-step Python "
            f"loop takes {description['python_loop_s'] * 1e3:.0f} ms here"
        )
    failed = False
    for position, name in enumerate(names, 1):
        _progress(f"bench: running {name} ({position} of {len(names)}) ...")
        try:
            result = run_scenario(name, agents=agents, jobs=jobs, repeat=repeat)
        except Exception as exc:
            result = {"scenario": name, "error": f"{type(exc).__name__}: {exc}", "met": False}
            failed = True
        _progress("")
        if document:
            results.append(result)
            continue
        result["machine"] = description
        if as_json:
            print(msgspec.json.encode(result).decode(), flush=True)
        elif "error" in result:
            print(f"{name}: could not run: {result['error']}", flush=True)
        else:
            print(summary(result), flush=True)
    if document:
        print(msgspec.json.encode(run_document(results, description, time.perf_counter() - began)).decode(), flush=True)
    return 1 if failed else 0


def run_document(results: Sequence[dict[str, Any]], description: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The one JSON document of `swarmd bench all --json`: the machine and command, every
    target of every scenario in one list (``targets``), the results, and ``met`` (false if any
    target is unmet or a scenario could not run; null if the rest were met but some target could
    not be measured)."""
    targets = [{"scenario": result["scenario"], **row} for result in results for row in result.get("targets", [])]
    errors = [result for result in results if "error" in result]
    met: bool | None = False if errors else all_met(targets)
    return {
        "command": "swarmd bench all --json",
        "machine": description,
        "seconds": seconds,
        "met": met,
        "targets": targets,
        "errors": {result["scenario"]: result["error"] for result in errors},
        "scenarios": list(results),
    }


def _progress(text: str) -> None:
    """Which scenario runs now, on one line of stderr redrawn in place; nothing off a terminal
    (so piped or redirected output holds only the results)."""
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[K" + text)
        sys.stderr.flush()
