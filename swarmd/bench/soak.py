"""The `soak` scenario: a million no-op jobs through one SQLite daemon.

A producer submits ``echo`` jobs in batches of `BATCH` while the daemon drains them, keeping
at most `BACKLOG` queued, so that the daemon runs under steady load for the whole run instead
of draining a queue filled beforehand. A sampler thread reads, every ``sample_every`` seconds,
the daemon's resident memory and how long ``GET /metrics`` and ``GET /healthz`` take to answer.

Reported: RSS once warmed up (`WARMUP` of the jobs recorded), at mid-run and at the end, and
the growth from warm-up to the end (flat, no leak: within `RSS_FLAT`); the slowest
``/metrics`` and ``/healthz`` answers (target: under `LATENCY_TARGET`) and any that was not a
200; and the ledger is checked to hold every submitted job exactly once, its chain verified.

Bounded state: the state's size on disk (database, WAL, archive) before the first submit and
after the last entry, and per job; then the cost of retention, in interleaved paired rounds:
each round runs `ROUND_JOBS` no-op jobs with idempotency keys through a fresh daemon with retention
on and through one with it off (`RETENTION`; which goes first alternates), and the median of
the paired throughput ratios (on / off) must be at least `RETENTION_RATIO_TARGET`. Each
retention-on round also reports the ledger entries still live at its end (about the 5,000 it
keeps if archiving kept up). Beside the rounds, `swarmd.bench.retention_cost` measures in
process what retention costs the backend per job against what the hot path costs it, and the
ratio those two bound the rounds to; and `PACED_ROUNDS` more pairs run `PACED` jobs (50 ms
each), which leave the backend room for retention: reported, without a target.

Holds of housekeeping: at the end of each retention-on round, the daemon's
``swarmd_state_upkeep_step_seconds{step}`` (each step's hold of the backend's one thread once
it has the write lock, which the hot path's commits wait behind); reported per step over all
rounds: how many, the share within `UPKEEP_STEP_TARGET` and the highest bucket bound reached. A
step's hold counts its waits for the GIL between statements, which the hot path's own commits
pay too; so the target is what the hot path feels: at the end of every
round, both sides' ``swarmd_ledger_commit_seconds`` (the group commits of outcomes), summed over
the rounds of each side; the median and the 99th percentile with retention on may each exceed
the ones with it off by at most `COMMIT_ADDED` (a few milliseconds: housekeeping never holds the
hot path long).
Quantiles are read from the buckets as PromQL's ``histogram_quantile`` reads them (linear
within the bucket that holds the rank).
"""

from __future__ import annotations

import contextlib
import functools
import math
import sqlite3
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from prometheus_client.parser import text_string_to_metric_families

from swarmd.bench.helpers import BenchError, all_met, ledger_count, readonly_ledger, spread, target
from swarmd.bench.retention_cost import bench_retention_cost
from swarmd.client import Client
from swarmd.model import UpkeepStep
from swarmd.runtime.retention import measure_state
from swarmd.testing.daemon import LocalDaemon
from swarmd.testing.polling import wait_until

#: Jobs per submit call.
BATCH: Final = 5000
#: Most jobs submitted and not yet recorded: the producer waits for the daemon beyond this.
BACKLOG: Final = 50_000
#: Share of the jobs recorded after which the daemon counts as warmed up.
WARMUP: Final = 0.1
#: RSS growth from warm-up to the end that still counts as flat.
RSS_FLAT: Final = 0.05
#: Slowest acceptable /metrics and /healthz answer, in seconds.
LATENCY_TARGET: Final = 0.1
#: Paired rounds of retention on against off, and jobs per round (per side). A round must be
#: long enough for retention to reach its steady state, archiving as fast as jobs finish: about
#: 8 s at 12,000 jobs/s, eight archive rounds. Rounds of 20,000 jobs (under 2 s) ended during
#: the first archive round, so they measured little of its cost (0.95 in a run where rounds of
#: 100,000 gave medians of 0.75-0.92 the same hour).
ROUNDS: Final = 5
ROUND_JOBS: Final = 100_000
#: Jobs through the in-process measure of retention's cost (`swarmd.bench.retention_cost`).
COST_JOBS: Final = 50_000
#: Lowest acceptable median of the paired throughput ratios, retention on / off.
RETENTION_RATIO_TARGET: Final = 0.9
#: The hold of the backend by one housekeeping step the report counts steps within, in seconds
#: (a bucket bound of ``swarmd_state_upkeep_step_seconds``).
UPKEEP_STEP_TARGET: Final = 0.005
#: Steps that run on the SQLite backend's second connection and thread, beside the hot path's
#: commits: reported on their own, not in ``all``.
ASIDE_STEPS: Final = frozenset({UpkeepStep.WAL_CHECKPOINT.value})
#: The histogram of housekeeping holds, as /metrics names its family.
UPKEEP_METRIC: Final = "swarmd_state_upkeep_step_seconds"
#: The histogram of the hot path's group commits, and how much longer its median and its 99th
#: percentile may be with retention on than off, in seconds.
COMMIT_METRIC: Final = "swarmd_ledger_commit_seconds"
COMMIT_ADDED: Final = 0.005


@dataclass(frozen=True, slots=True)
class RetentionSetting:
    """What "retention on" and "off" mean for the paired rounds: the daemon's environment on
    each side. One object: ledger retention adds its settings here when it merges.

    On: finished jobs' keys expire after one second (a pass every quarter of a second, so the
    expiry runs all through the round), and the ledger keeps its newest 5,000 entries live,
    archiving the rest in rounds every second (forget steps, then space given back: vacuum steps
    and a WAL checkpoint). Off: a result_ttl no round reaches (a pass a minute that finds
    nothing) and no ledger retention.
    """

    on: Mapping[str, str] = field(
        default_factory=lambda: {
            "SWARMD_RESULT_TTL": "1s",
            "SWARMD_LEDGER_MAX_ENTRIES": "5000",
            "SWARMD_CHECKPOINT_INTERVAL": "1s",
        }
    )
    off: Mapping[str, str] = field(default_factory=lambda: {"SWARMD_RESULT_TTL": "1000w"})


RETENTION: Final = RetentionSetting()


@dataclass(frozen=True, slots=True)
class Workload:
    """What the paired rounds' jobs run: ``agent`` with ``payload`` (``name`` says it in reports)."""

    name: str
    agent: str
    payload: Any = None


#: No-op jobs: the daemon runs them as fast as its backend's one thread commits them, so
#: retention's work competes with the hot path's for that thread (`swarmd.bench.retention_cost`
#: measures the bound this sets).
NO_OP: Final = Workload("no-op", "echo")
#: Jobs that take 50 ms each (the builtin ``sleep``) at the default concurrency of 256: at most
#: 5,120 jobs/s, under what the backend sustains with retention on, so that retention's work
#: fits beside the hot path's: what a daemon whose handlers do real work sees.
PACED: Final = Workload("50 ms", "sleep", {"seconds": 0.05})
#: Paired rounds of PACED jobs, and jobs per round (about 12 s a side).
PACED_ROUNDS: Final = 3
PACED_JOBS: Final = 50_000


@dataclass(frozen=True, slots=True)
class Sample:
    """One look at the daemon."""

    at: float  # seconds since the first submit
    recorded: int  # ledger entries so far
    rss_bytes: int
    metrics_status: int  # 0: no answer within 5 s
    metrics_s: float
    healthz_status: int
    healthz_s: float


def _room_for(conn: sqlite3.Connection, submitted: int) -> bool:
    """Whether ``submitted`` jobs would stay within BACKLOG of the ledger."""
    return submitted - ledger_count(conn) <= BACKLOG


def _timed_get(daemon: LocalDaemon, path: str) -> tuple[int, float]:
    """(HTTP status, seconds) of one GET on the daemon's listener; status 0: no answer."""
    started = time.perf_counter()
    status, _ = daemon.get(path)
    return status, time.perf_counter() - started


class _Sampler(threading.Thread):
    """Samples the daemon every ``every`` seconds until `stop`, then once more (the end)."""

    def __init__(self, daemon: LocalDaemon, every: float, started: float) -> None:
        super().__init__(name="swarmd-soak-sampler", daemon=True)
        self.watched = daemon
        self.every = every
        self.started = started
        self.samples: list[Sample] = []
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            with contextlib.closing(readonly_ledger(self.watched.state_dir)) as conn:
                while not self._stop_event.wait(self.every):
                    self.samples.append(self.sample(conn))
                self.samples.append(self.sample(conn))
        except BaseException as exc:  # read by the caller after `stop`
            self.error = exc

    def sample(self, conn: sqlite3.Connection) -> Sample:
        metrics = _timed_get(self.watched, "/metrics")
        healthz = _timed_get(self.watched, "/healthz")
        return Sample(
            at=time.perf_counter() - self.started,
            recorded=ledger_count(conn),
            rss_bytes=self.watched.rss_bytes(),
            metrics_status=metrics[0],
            metrics_s=metrics[1],
            healthz_status=healthz[0],
            healthz_s=healthz[1],
        )

    def stop(self) -> list[Sample]:
        self._stop_event.set()
        self.join()
        if self.error is not None:
            raise BenchError(f"soak: sampling the daemon failed: {self.error!r}") from self.error
        return self.samples


def _produce(client: Client, conn: sqlite3.Connection, jobs: int) -> list[str]:
    """Submit ``jobs`` no-op jobs in batches, never more than BACKLOG ahead of the ledger."""
    ids: list[str] = []
    while len(ids) < jobs:
        ahead = min(len(ids) + BATCH, jobs)
        wait_until(functools.partial(_room_for, conn, ahead), timeout=120, what="the daemon to drain", step=0.01)
        specs = [{"agent": "echo", "gid": f"GID-{i % 1000}"} for i in range(len(ids), ahead)]
        ids.extend(client.submit_many(specs).job_ids)
    return ids


def _check_ledger(client: Client, conn: sqlite3.Connection, ids: list[str]) -> int:
    """Raise unless the ledger holds every submitted job once and nothing else; return its size."""
    missing = set(ids)
    unexpected = 0
    for (job_id,) in conn.execute("SELECT job_id FROM ledger"):
        if job_id in missing:
            missing.discard(job_id)
        else:
            unexpected += 1  # another job, or one recorded twice
    report = client.verify()
    queued = client.counts()
    if missing or unexpected or not report.ok or report.entries != len(ids) or any(queued.values()):
        raise BenchError(
            f"soak: {len(missing)} jobs missing from the ledger, {unexpected} unexpected, "
            f"{report.entries} entries ({report.summary()}), still queued {queued}"
        )
    return report.entries


def upkeep_buckets(exposition: str) -> dict[str, dict[float, float]]:
    """From a /metrics text: per housekeeping step, the cumulative counts of
    ``swarmd_state_upkeep_step_seconds`` by bucket bound (``le``; +Inf included), added up over
    the workers of a daemon that runs several."""
    return histogram_buckets(exposition, UPKEEP_METRIC, "step")


def histogram_buckets(exposition: str, metric: str, by: str | None = None) -> dict[str, dict[float, float]]:
    """From a /metrics text: the cumulative bucket counts of histogram ``metric`` by bound
    (``le``; +Inf included), per value of label ``by`` (None: all under ``"all"``), added up
    over every other label (a daemon's workers, agents)."""
    found: dict[str, dict[float, float]] = {}
    for family in text_string_to_metric_families(exposition):
        if family.name != metric:
            continue
        for sample in family.samples:
            if sample.name == f"{metric}_bucket":
                buckets = found.setdefault("all" if by is None else sample.labels[by], {})
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return found


def bucket_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The ``q`` quantile of cumulative ``buckets`` as PromQL's ``histogram_quantile`` gives it:
    linear within the bucket that holds the rank (the highest finite bound if that is +Inf);
    None without observations."""
    bounds = sorted(buckets)
    total = buckets.get(float("inf"), 0.0)
    if not total:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * ((rank - below) / (count - below) if count > below else 1.0)
        lower, below = bound, count
    return lower


def _add_buckets(total: dict[str, dict[float, float]], more: Mapping[str, Mapping[float, float]]) -> None:
    for step, buckets in more.items():
        into = total.setdefault(step, {})
        for bound, count in buckets.items():
            into[bound] = into.get(bound, 0.0) + count


def upkeep_holds(buckets: Mapping[str, Mapping[float, float]]) -> dict[str, dict[str, Any]]:
    """Per step (and ``all`` the steps that hold the backend's thread, `ASIDE_STEPS` not among
    them): how many steps ran, the share within `UPKEEP_STEP_TARGET`, and the highest bucket
    bound reached (the bound the slowest step fell under; inf: past the last)."""
    report: dict[str, dict[str, Any]] = {}
    everything: dict[str, dict[float, float]] = {}
    for step, counts in buckets.items():
        if step not in ASIDE_STEPS:  # ``all``: the holds of the backend's thread
            _add_buckets(everything, {"all": counts})
    for step, counts in [*sorted(buckets.items()), *everything.items()]:
        count = counts.get(float("inf"), 0.0)
        within = counts.get(UPKEEP_STEP_TARGET, 0.0)
        highest = min((bound for bound, n in counts.items() if n >= count), default=None) if count else None
        report[step] = {
            "count": int(count),
            "within_target_share": within / count if count else None,
            "highest_bucket_s": highest,
        }
    return report


def _round(
    parent: Path, name: str, jobs: int, env: Mapping[str, str], workload: Workload = NO_OP
) -> tuple[float, int, str, int]:
    """Run ``jobs`` jobs of ``workload`` with idempotency keys through a fresh daemon with ``env``; return
    (jobs per second, first submit to last ledger entry; bytes of state at the end; its /metrics
    text at the end; ledger entries still live at the end, the rest archived)."""
    state = parent / name
    with LocalDaemon(state, env=env, log_level="warning") as daemon, Client(state) as client:
        conn = readonly_ledger(state)
        try:
            started = time.perf_counter()
            for start in range(0, jobs, BATCH):
                specs = [
                    {
                        "agent": workload.agent,
                        "payload": workload.payload,
                        "gid": f"GID-{i % 1000}",
                        "idempotency_key": f"{name}-{i}",
                    }
                    for i in range(start, min(start + BATCH, jobs))
                ]
                client.submit_many(specs)
            wait_until(lambda: ledger_count(conn) >= jobs, timeout=max(120, jobs / 100), what=f"{name}", step=0.01)
            wall = time.perf_counter() - started
            (live,) = conn.execute("SELECT count(*) FROM ledger").fetchone()
        finally:
            conn.close()
        status, exposition = daemon.get("/metrics")
        if status != 200:
            raise BenchError(f"soak: {name}: /metrics answered {status}")
        size = measure_state(daemon.state_dir, daemon.state_dir / "archive").total
    return jobs / wall, size, exposition, int(live)


def bench_retention_rounds(
    rounds: int = ROUNDS, jobs: int = ROUND_JOBS, setting: RetentionSetting = RETENTION, workload: Workload = NO_OP
) -> dict[str, Any]:
    """Throughput with retention on against off, in ``rounds`` interleaved pairs of ``workload``."""
    pairs: list[dict[str, float]] = []
    holds: dict[str, dict[float, float]] = {}
    commits: dict[str, dict[str, dict[float, float]]] = {"on": {}, "off": {}}
    with tempfile.TemporaryDirectory(prefix="swarmd-bench-retention-") as parent:
        for n in range(rounds):
            sides = [("on", setting.on), ("off", setting.off)]
            if n % 2:
                sides.reverse()  # which goes first alternates: drift hits both sides alike
            pair: dict[str, float] = {}
            for side, env in sides:
                rate, size, exposition, live = _round(Path(parent), f"round{n}-{side}", jobs, env, workload)
                if side == "on":
                    _add_buckets(holds, upkeep_buckets(exposition))
                    pair["on_live_entries"] = live  # archiving kept up if near the 5,000 kept
                _add_buckets(commits[side], histogram_buckets(exposition, COMMIT_METRIC))
                pair[f"{side}_jobs_per_s"] = rate
                pair[f"{side}_state_bytes"] = size
            pair["ratio"] = pair["on_jobs_per_s"] / pair["off_jobs_per_s"]
            pairs.append(pair)
    median = spread([pair["ratio"] for pair in pairs])["median"]
    return {
        "retention_workload": workload.name,
        "retention_rounds": pairs,
        "retention_round_jobs": jobs,
        "retention_median_ratio": median,
        "retention_met": median >= RETENTION_RATIO_TARGET,
        "upkeep_holds": upkeep_holds(holds),
        "commit_seconds": {
            side: {
                "count": int(buckets.get("all", {}).get(float("inf"), 0.0)),
                "p50": bucket_quantile(0.5, buckets.get("all", {})),
                "p99": bucket_quantile(0.99, buckets.get("all", {})),
            }
            for side, buckets in commits.items()
        },
    }


def _first(samples: list[Sample], recorded: int) -> Sample:
    return next(sample for sample in samples if sample.recorded >= recorded)


def bench_soak(
    jobs: int = 1_000_000,
    sample_every: float = 0.5,
    state_dir: Path | None = None,
    *,
    rounds: int = ROUNDS,
    round_jobs: int = ROUND_JOBS,
    cost_jobs: int = COST_JOBS,
    paced_rounds: int = PACED_ROUNDS,
    paced_jobs: int = PACED_JOBS,
) -> dict[str, Any]:
    """The scenario; the daemon's state goes to ``state_dir`` (default: a temporary directory,
    deleted afterwards). ``rounds`` pairs of ``round_jobs`` no-op jobs compare retention on and
    off (0: not measured; the target), ``cost_jobs`` jobs measure retention's cost in process,
    and ``paced_rounds`` pairs of ``paced_jobs`` 50 ms jobs compare them where the backend has
    room (reported, no target)."""
    with contextlib.ExitStack() as stack:
        state = state_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="swarmd-bench-"))) / "state"
        with LocalDaemon(state, log_level="warning") as daemon, Client(state) as client:
            conn = readonly_ledger(state)
            try:
                before = measure_state(state, state / "archive")
                started = time.perf_counter()
                sampler = _Sampler(daemon, sample_every, started)
                sampler.start()
                try:
                    ids = _produce(client, conn, jobs)
                    wait_until(
                        lambda: ledger_count(conn) >= jobs,
                        timeout=max(120, jobs / 1000),
                        what=f"{jobs:,} ledger entries",
                        step=0.01,
                    )
                    wall = time.perf_counter() - started
                finally:
                    samples = sampler.stop()
                entries = _check_ledger(client, conn, ids)
                after = measure_state(state, state / "archive")
            finally:
                conn.close()
    retention: dict[str, Any] = {"retention_met": True}
    if rounds:
        retention = bench_retention_rounds(rounds, round_jobs)
        retention["retention_cost"] = bench_retention_cost(cost_jobs)
        if paced_rounds:
            paced = bench_retention_rounds(paced_rounds, paced_jobs, workload=PACED)
            del paced["retention_met"]  # reported, not a target
            retention["retention_paced"] = paced
    warm, mid, end = _first(samples, int(jobs * WARMUP)), _first(samples, jobs // 2), samples[-1]
    after_warmup = samples[samples.index(warm) :]
    growth = (end.rss_bytes - warm.rss_bytes) / warm.rss_bytes
    failed = [s for s in samples if s.metrics_status != 200 or s.healthz_status != 200]
    metrics_s = spread([s.metrics_s for s in samples])
    healthz_s = spread([s.healthz_s for s in samples])
    return {
        "jobs": jobs,
        "ledger_entries": entries,
        "wall_s": wall,
        "jobs_per_s": jobs / wall,
        "samples": len(samples),
        "sample_every_s": sample_every,
        "rss_warm_bytes": warm.rss_bytes,
        "rss_mid_bytes": mid.rss_bytes,
        "rss_end_bytes": end.rss_bytes,
        "rss_max_after_warmup_bytes": max(s.rss_bytes for s in after_warmup),
        "rss_growth_after_warmup": growth,
        "rss_growth_mid_to_end": (end.rss_bytes - mid.rss_bytes) / mid.rss_bytes,
        "metrics_latency_s": metrics_s,
        "healthz_latency_s": healthz_s,
        "failed_samples": len(failed),
        "timeline": [asdict(sample) for sample in samples],
        "state_bytes_before": before.parts,
        "state_bytes_after": after.parts,
        "state_bytes_per_job": (after.total - before.total) / jobs,
        **retention,
        "targets": (
            targets := _targets(
                growth,
                len(failed),
                metrics_s["max"],
                healthz_s["max"],
                retention.get("retention_median_ratio"),
                _added(retention.get("commit_seconds"), "p50"),
                _added(retention.get("commit_seconds"), "p99"),
            )
        ),
        "met": all_met(targets),
    }


def _added(commits: Mapping[str, Mapping[str, Any]] | None, quantile: str) -> float | None:
    """How much longer the hot path's commit was at ``quantile`` ("p50", "p99") with retention
    on than off (None: unmeasured)."""
    if not commits:
        return None
    on, off = commits["on"][quantile], commits["off"][quantile]
    return None if on is None or off is None else on - off


def _targets(
    growth: float,
    failed: int,
    metrics_max: float,
    healthz_max: float,
    retention_ratio: float | None,
    p50_added: float | None,
    p99_added: float | None,
) -> list[dict[str, Any]]:
    slowest = f"answered 200 within {LATENCY_TARGET * 1e3:.0f} ms throughout"
    return [
        *(
            target(
                f"commit_{name}_added",
                f"housekeeping adds <= {COMMIT_ADDED * 1e3:.0f} ms to the hot path's {name} group commit "
                "(retention on against off, over the paired rounds)",
                added,
                COMMIT_ADDED,
                why_unmeasured="no paired rounds were asked for (--repeat 0), or a side committed nothing",
            )
            for name, added in (("p50", p50_added), ("p99", p99_added))
        ),
        target(
            "retention_on_off",
            f"throughput with retention on >= {RETENTION_RATIO_TARGET} x off (median of interleaved paired rounds)",
            retention_ratio,
            RETENTION_RATIO_TARGET,
            at_least=True,
            why_unmeasured="no paired rounds were asked for (--repeat 0)",
        ),
        target("rss_growth", f"RSS flat after warm-up (within {RSS_FLAT:.0%})", growth, RSS_FLAT),
        target("failed_samples", "every /metrics and /healthz sample answered 200", float(failed), 0.0),
        target("metrics_max_s", f"/metrics {slowest}", metrics_max, LATENCY_TARGET),
        target("healthz_max_s", f"/healthz {slowest}", healthz_max, LATENCY_TARGET),
    ]
