"""`swarmd serve`: the daemon's life, from start-up checks to a clean drain.

Start: settings checked → state directory (0700) locked → HTTP listener bound → agents
loaded → queue opened and leases of a dead predecessor returned → ``READY=1``. Running: the
worker pulls and runs jobs; the watchdog is pinged only while the event loop turns. SIGTERM or
SIGINT: ``STOPPING=1``, stop reserving, give running jobs the grace period, return the rest,
commit everything, exit 0 (a second signal cuts the grace short). SIGHUP: reload the
concurrency limits and the log level.

Whatever handlers do, the daemon exits within a bound: a handler that ignores its
cancellation is abandoned (swarmd.runtime.running); tasks a handler leaves behind cannot end
the daemon (a SystemExit or KeyboardInterrupt they raise is logged and counted in
``swarmd_stray_task_errors_total``, like any exception nobody retrieves), and those still
running when the daemon is done are cancelled once and given STRAY_BOUND seconds, then left.
An exception that escapes the worker is a crash: the jobs running then are recorded
(swarmd.runtime.crashes) before the daemon exits 1, so that a job crashing it again and again
ends as a poison dead letter.

With ``workers`` > 1, `serve` runs the supervisor (swarmd.runtime.supervisor) instead, and each
worker process runs a `Daemon` in the role of a `WorkerRole`: no state lock, no HTTP listener
(its metrics go to the supervisor over a unix socket), no sd_notify (it beats on the control
socket instead), its own wake socket, and the API socket in worker 0 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import msgspec
import structlog
import uvloop

from swarmd.config import (
    RELOADABLE,
    Settings,
    archive_path,
    listen_address,
    load_settings,
    resolve_state_dir,
    worker_count,
)
from swarmd.errors import error_text
from swarmd.queue.base import Disposition, QueueBackend
from swarmd.queue.factory import open_backend
from swarmd.queue.sqlite.backend import SqliteBackend
from swarmd.queue.sqlite.wake import worker_socket_name
from swarmd.queue.waiting import FinishedWaiters
from swarmd.registry import Registry, build_registry
from swarmd.runtime.api_ops import ApiOps
from swarmd.runtime.api_server import ApiServer
from swarmd.runtime.cancelling import stop_task
from swarmd.runtime.crashes import CrashRecords
from swarmd.runtime.execution import Attempt
from swarmd.runtime.httpserver import HttpServer
from swarmd.runtime.ledger_upkeep import LedgerUpkeep
from swarmd.runtime.retention import ResultExpiry
from swarmd.runtime.scheduler import Scheduler, resolve_schedules
from swarmd.runtime.sdnotify import notify, watchdog_interval
from swarmd.runtime.stall_watch import Stall, StallWatcher
from swarmd.runtime.statedir import StateLock, prepare
from swarmd.runtime.supervisor import supervise
from swarmd.runtime.worker import Worker
from swarmd.runtime.worker_link import BEAT_SECONDS, SupervisorLink, metrics_socket
from swarmd.runtime.worker_metrics import MetricsExporter
from swarmd.schedules import Schedule
from swarmd.telemetry.logs import configure_logging, set_level
from swarmd.telemetry.metrics import Metrics
from swarmd.telemetry.tracing import Tracing
from swarmd.version import __version__

log = structlog.get_logger("swarmd.daemon")
_T = TypeVar("_T")

#: /healthz fails when the event loop has not ticked for this long.
STALL_SECONDS: Final = 2.0
SWITCH_INTERVAL: Final = 0.0005
#: Seconds a stopping daemon waits for a background task (retention) to end once cancelled.
TASK_STOP_WAIT: Final = 2.0
GC_THRESHOLD: Final = (100_000, 50, 100)
#: Seconds tasks still running when the daemon is done get after one cancel, before it exits anyway.
STRAY_BOUND: Final = 1.0


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """A `Daemon` that is worker ``index`` of a supervisor, linked to it by ``link``."""

    index: int
    link: SupervisorLink
    recover_all_leases: bool


class Daemon:
    def __init__(
        self,
        settings: Settings,
        *,
        config_path: Path | None = None,
        flags: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
        role: WorkerRole | None = None,
    ) -> None:
        self.settings = settings
        self.role = role
        self.config_path = config_path
        self.flags = dict(flags or {})
        self.environ = os.environ if environ is None else environ
        self.worker: Worker | None = None
        self.backend: QueueBackend | None = None
        self.not_ready_reason: str | None = "starting"
        self._reloading: asyncio.Task[None] | None = None
        self._reload_again = False
        self.registry: Registry | None = None
        self.metrics: Metrics | None = None
        #: What the scheduler fires (swarmd.runtime.scheduler), resolved at the start.
        self.schedules: list[Schedule] = []
        #: Set once SIGINT and SIGTERM go to the daemon's own handlers: from then on, a
        #: KeyboardInterrupt can only come from a task (see `_run_until`).
        self.signals_installed = False

    # -- health, read by the HTTP thread ----------------------------------------------------
    def health(self) -> tuple[bool, str]:
        if self.worker is None:
            return True, "starting"
        stalled = time.monotonic() - self.worker.health.last_tick
        if stalled > STALL_SECONDS:
            return False, f"event loop has not turned for {stalled:.1f}s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        worker = self.worker
        if self.not_ready_reason is not None:
            return False, self.not_ready_reason
        if worker is None:
            return False, "starting"
        if worker.health.draining:
            return False, "draining"
        if worker.health.commit_error is not None:
            return False, f"cannot commit outcomes: {worker.health.commit_error}"
        if worker.health.backend_error is not None:
            return False, f"queue unreachable: {worker.health.backend_error}"
        ok, reason = self.health()
        return ok, reason

    # -- life ------------------------------------------------------------------------------
    async def run(self) -> int:
        settings = self.settings
        state_dir = prepare(resolve_state_dir(settings.state_dir, self.environ))
        # One daemon per SQLite state; daemons on one Redis share its work by design. A worker's
        # supervisor holds the lock for it.
        lock = StateLock(state_dir) if settings.backend == "sqlite" and self.role is None else None
        if lock is not None:
            lock.acquire()
        try:
            registry = build_registry(settings.agents, agents_path=settings.agents_path, state_dir=state_dir)
            self.schedules = resolve_schedules(settings, registry)  # a bad schedule stops us before any write
            metrics = self.metrics = Metrics(agents=registry.names(), version=__version__, loop="uvloop")
            listener: HttpServer | MetricsExporter
            if self.role is None:
                host, port = listen_address(settings)
                listener = HttpServer(host, port, metrics.registry, health=self.health, ready=self.ready)
                where = listener.address
            else:
                listener = MetricsExporter(metrics.registry, metrics_socket(state_dir, self.role.index))
                where = str(listener.path)
            listener.start()
            try:
                return await self._serve(state_dir, registry, metrics, where)
            finally:
                listener.stop()
        finally:
            if lock is not None:
                lock.release()

    async def _serve(self, state_dir: Path, registry: Registry, metrics: Metrics, listen: str) -> int:
        settings = self.settings
        role = self.role
        tracing = Tracing.from_env(self.environ)
        tracing.install_global()
        backend = self.backend = open_backend(settings, state_dir, check_integrity=role is None)
        backend.on_upkeep_step = metrics.observe_upkeep_step  # swarmd_state_upkeep_step_seconds{step}
        if isinstance(backend, SqliteBackend):
            backend.checkpoint_aside = True  # no commit of the hot path copies the WAL
            if role is not None:
                backend.wake_socket = worker_socket_name(role.index)  # fed by the supervisor's relay
                backend.queue_writes = True  # the workers take turns writing, without busy sleeps
        await backend.open()
        try:
            # Every lease at start, under the state lock; a worker of a supervisor returns only
            # what is safe beside the other workers (swarmd.runtime.worker_link.WorkerSpec).
            recovered = await backend.recover(all_leases=role is None or role.recover_all_leases)
            # Agents an earlier daemon published stay published: their queued jobs are kept for a
            # daemon that loads them (unroutable here), never dead-lettered as unknown.
            previous = await backend.published_agents() or []
            served_elsewhere = frozenset(previous) - set(registry.names())
            tail = await backend.ledger_tail(1)
            if tail:  # the gauge means "last committed index", also before this run's first commit
                metrics.set_ledger_index(tail[-1].index)
            await backend.listen()
            # /readyz says ready only once everything a producer reaches is up, the API socket too.
            refusal = await self._durability_problem(backend)
            if refusal is None:  # published only by a daemon that serves: producers
                # tell from the published agents whether their jobs will be served.
                await backend.publish_agents(sorted(set(previous) | set(registry.names())))
            worker = self.worker = Worker(backend, registry, settings, metrics, tracing)
            if role is None or role.index == 0:  # one ledger upkeep (archives, checkpoints) per daemon
                archive_dir = archive_path(settings, state_dir) if settings.archive else None
                worker.upkeep = LedgerUpkeep(backend, settings, archive_dir).run
            worker.admission.served_elsewhere = served_elsewhere
            if served_elsewhere:
                log.info("agents_served_elsewhere", agents=sorted(served_elsewhere))
            self.registry = registry
            records = CrashRecords(state_dir)
            self._watch_crashes(worker, records)
            self._install_signals(worker)
            self._warn_unknown_agent_tables(settings, registry)
            ops = ApiOps(backend, registry.names(), settings, metrics)
            worker.on_committed.append(functools.partial(_wake_waiters, ops.waiters))
            api: ApiServer | None = None
            if role is None or role.index == 0:  # one API socket: the other workers' commits
                # reach its waiters through the supervisor
                api = ApiServer.for_settings(settings, state_dir, ops, metrics, dict(self.environ))
                await api.start()  # producers of other users submit through it (swarmd.runtime.api_server)
            if role is not None:
                role.link.start(
                    on_committed=ops.waiters.committed, on_crashes=functools.partial(_reread_crashes, worker, records)
                )
                if role.index != 0:
                    worker.on_committed.append(functools.partial(_tell_supervisor, role.link))
            self.not_ready_reason = refusal
            stalls = StallWatcher(
                last_turn=lambda: worker.health.last_tick,
                loop_thread=threading.get_ident(),
                threshold=STALL_SECONDS,
                on_stall=functools.partial(_report_stall, metrics),
            )
            stalls.start()
            log.info(
                "started",
                version=__version__,
                pid=os.getpid(),
                backend=backend.name,
                state_dir=str(state_dir),
                listen=listen,
                worker=None if role is None else role.index,
                agents=registry.names(),
                recovered_leases=recovered,
                max_concurrent=settings.max_concurrent,
                tracing=tracing.enabled,
            )
            # Read at each scrape, as /readyz is: a full disk or a lost queue reads 0 as well.
            metrics.ready.set_function(lambda: 1.0 if self.ready()[0] else 0.0)
            tune_gc()  # everything loaded by now (agents, telemetry) is frozen out of collection
            self._notify(f"READY=1\nSTATUS=serving {backend.name} queue {settings.queue}\nMAINPID={os.getpid()}")
            watchdog = asyncio.get_running_loop().create_task(
                self._watchdog(worker) if role is None else self._beat(worker, role.link)
            )
            scheduler, scheduling = self._start_scheduler(backend, metrics)
            expiry = ResultExpiry(backend, settings, metrics, state_dir)
            if self.not_ready_reason is None and (role is None or role.index == 0):  # one per daemon;
                # a refusing daemon writes nothing
                retention = asyncio.get_running_loop().create_task(expiry.run(), name="swarmd-retention")
            else:
                retention = asyncio.get_running_loop().create_task(expiry.refresh_metrics(), name="swarmd-retention")
            try:
                if self.not_ready_reason is None:
                    await worker.run()
                else:  # refusing: stay up (alive on /healthz) and say why on /readyz, but take no work
                    heartbeat = asyncio.get_running_loop().create_task(worker.heartbeat())
                    try:
                        await worker.stop_requested()
                    finally:
                        heartbeat.cancel()
            finally:
                if scheduler is not None and scheduling is not None:
                    scheduler.stop()
                    scheduling.cancel()
                watchdog.cancel()
                await stop_task(retention, TASK_STOP_WAIT)  # bounded: never hang a stop on it
                stalls.stop()
                if api is not None:
                    await api.close()
            metrics.set_ready(False)
            log.info("stopped", pid=os.getpid())
            return 0
        finally:
            await backend.close()
            tracing.shutdown()

    def _start_scheduler(
        self, backend: QueueBackend, metrics: Metrics
    ) -> tuple[Scheduler | None, asyncio.Task[None] | None]:
        """Fire the schedules in a task of their own, once the daemon serves (not while it refuses),
        in one worker of a daemon that runs several (the ticks' keys would keep the others' out,
        at the cost of a refused submit each)."""
        if not self.schedules or self.not_ready_reason is not None or (self.role is not None and self.role.index != 0):
            return None, None
        scheduler = Scheduler(backend, self.schedules, metrics, max_payload_bytes=self.settings.max_payload_bytes)
        task = asyncio.get_running_loop().create_task(scheduler.run(), name="swarmd-scheduler")
        task.add_done_callback(_report_scheduler_end)
        return scheduler, task

    def _watch_crashes(self, worker: Worker, records: CrashRecords) -> None:
        """Hand the worker the jobs named in earlier crash records (poison jobs and suspects),
        and have it record the jobs running if it crashes in turn."""
        counts = records.counts()
        runner = worker.runner
        runner.crashes = counts
        runner.poison_after = self.settings.poison_after
        runner.on_cleared = records.clear
        worker.on_crash = records.record
        if counts:
            poison = sorted(job for job, n in counts.items() if 0 < self.settings.poison_after <= n)
            log.warning("crash_suspects", suspects=len(counts), poison=poison[:100], records=str(records.path))

    def stray_error(self, exc: BaseException | None, message: str, task: object = None) -> None:
        """A task nobody awaits raised (a handler's leftover task, mostly): log it, count it."""
        if self.metrics is not None:
            self.metrics.stray_task_errors.inc()
        log.error(
            "stray_task_error",
            message=message,
            error=error_text(exc) if exc is not None else None,
            task=_task_name(task),
        )

    def loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """The event loop's exception handler: what no one retrieved, logged and counted,
        never raising (the default one formats the exception, which may itself raise)."""
        exc = context.get("exception")
        if isinstance(exc, (SystemExit, KeyboardInterrupt)):
            return  # counted when it stopped the loop (see `serve`)
        self.stray_error(
            exc if isinstance(exc, BaseException) else None,
            str(context.get("message", "")),
            context.get("task") or context.get("future"),
        )

    async def _durability_problem(self, backend: QueueBackend) -> str | None:
        reason = await backend.check_persistence()
        if reason is None:
            return None
        if self.settings.allow_volatile_redis:
            log.warning("volatile_redis_allowed", reason=reason)
            return None
        log.error("not_ready", reason=reason, fix="enable appendonly, or pass --allow-volatile-redis")
        return f"refusing to report ready: {reason} (pass --allow-volatile-redis to accept)"

    def _install_signals(self, worker: Worker) -> None:
        loop = asyncio.get_running_loop()

        def on_stop(signum: signal.Signals) -> None:
            first = not worker.health.draining
            log.info("signal", signal=signum.name, action="drain" if first else "hurry")
            if first:
                self._notify("STOPPING=1")
            worker.stop()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_stop, signum)
        loop.add_signal_handler(signal.SIGHUP, self._start_reload, worker)
        self.signals_installed = True

    def _start_reload(self, worker: Worker) -> None:
        """SIGHUP: reload in a task of its own, so that reading the file never runs on the event
        loop. One reload at a time: a SIGHUP during one makes it read the file once more after
        (a burst of SIGHUPs ends with the last file read, as the operator expects)."""
        if self._reloading is not None and not self._reloading.done():
            self._reload_again = True
            return
        self._reloading = asyncio.get_running_loop().create_task(self._reload_until_current(worker))

    async def _reload_until_current(self, worker: Worker) -> None:
        self._reload_again = True
        while self._reload_again:
            self._reload_again = False
            await self._reload(worker)

    async def _reload(self, worker: Worker) -> None:
        self._notify("RELOADING=1")
        try:
            # The same load and checks as at start-up, off the loop (the file may be slow to read).
            fresh = await asyncio.to_thread(
                load_settings, config_path=self.config_path, flags=self.flags, environ=self.environ
            )
            # A new snapshot with what can change live; the one in use is never changed in place.
            live = msgspec.structs.replace(self.settings, **{key: getattr(fresh, key) for key in RELOADABLE})
            set_level(live.log_level)
            worker.reload(live)
            ignored = changed_keys(self.settings, fresh) - RELOADABLE
            self.settings = live
            log.info("reloaded", max_concurrent=fresh.max_concurrent, log_level=fresh.log_level.value)
            if ignored:
                log.warning("reload_needs_restart", keys=sorted(ignored), reason="these keys change only at a restart")
            if self.registry is not None:
                self._warn_unknown_agent_tables(fresh, self.registry)
        except Exception as exc:
            log.error("reload_failed", error=error_text(exc))
        self._notify("READY=1")

    @staticmethod
    def _warn_unknown_agent_tables(settings: Settings, registry: Registry) -> None:
        """An [agent.NAME] table for an agent nobody registered is most likely a typo."""
        unknown = sorted(set(settings.agent) - set(registry.names()))
        if unknown:
            log.warning("config_unknown_agents", agents=unknown, known=registry.names())

    def _notify(self, message: str) -> None:
        """sd_notify, from a daemon of its own: a worker's supervisor speaks to systemd for it."""
        if self.role is None:
            notify(message)

    async def _beat(self, worker: Worker, link: SupervisorLink) -> None:
        """A worker's watchdog: every BEAT_SECONDS while the event loop turns, tell the
        supervisor whether it is ready; if the supervisor is gone, go too, at once (its state
        lock is gone with it: the leases held here come back at the next start)."""
        while not link.lost.is_set():
            if time.monotonic() - worker.health.last_tick <= STALL_SECONDS:
                link.beat(*self.ready())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(link.lost.wait(), BEAT_SECONDS)
        log.error("supervisor_gone", pid=os.getpid(), action="exit now")
        os._exit(1)

    async def _watchdog(self, worker: Worker) -> None:
        interval = watchdog_interval(self.environ)
        if interval is None:
            return
        while True:
            await asyncio.sleep(interval)
            if time.monotonic() - worker.health.last_tick <= max(STALL_SECONDS, interval):
                notify("WATCHDOG=1")


#: The dispositions whose commit writes a ledger entry: the job is finished.
_RECORDED: Final = (Disposition.DONE, Disposition.DEAD)  # a tuple: `in` hashes no Enum (a Python call)


def _wake_waiters(waiters: FinishedWaiters, batch: list[Attempt]) -> None:
    """After a commit: wake the API socket's waiters for the jobs it recorded."""
    waiters.committed(a.finish.job_id for a in batch if a.finish.disposition in _RECORDED)


def _report_scheduler_end(task: asyncio.Task[None]) -> None:
    """The scheduler only ends by cancellation; an exception is a bug: logged (the jobs keep
    running; SwarmdScheduleLate fires as the ticks fall behind)."""
    error = None if task.cancelled() else task.exception()
    if error is not None:
        log.error("scheduler_failed", error=error_text(error))


def _reread_crashes(worker: Worker, records: CrashRecords) -> None:
    """Another worker crashed: the jobs it named are suspects (or poison) here too, from now on."""
    counts = records.counts()
    worker.runner.crashes = counts
    log.info("crash_records_reread", suspects=len(counts))


def _tell_supervisor(link: SupervisorLink, batch: list[Attempt]) -> None:
    """After a commit of a worker that does not serve the API socket: the ids it recorded,
    for the waiters of the one that does."""
    link.committed([a.finish.job_id for a in batch if a.finish.disposition in _RECORDED])


def _report_stall(metrics: Metrics, stall: Stall) -> None:
    """A stall of the event loop, from the watcher's thread: one log line and the counter."""
    metrics.count_stall(stall.agent)
    log.warning(
        "event_loop_stalled",
        stalled_s=round(stall.seconds, 3),
        job_id=stall.job_id,
        agent=stall.agent,
        gid=stall.gid,
        stack=stall.stack,
    )


def changed_keys(old: Settings, new: Settings) -> set[str]:
    """The settings whose values differ between two snapshots."""
    return {name for name in old.__struct_fields__ if getattr(old, name) != getattr(new, name)}


def tune_gc() -> None:
    """Garbage collection for a daemon with up to 100,000 jobs in flight.

    CPython's cyclic collector runs every 700 net allocations and, from time to time, traverses
    every live object; with tens of thousands of tasks alive that made each job 3x dearer (bench
    scale). Objects alive at start-up (modules, agents) are frozen out of collection, and the
    young generation is collected every GC_THRESHOLD allocations instead. Cyclic garbage is
    still collected, in fewer, larger passes.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def serve(settings: Settings, *, config_path: Path | None = None, flags: Mapping[str, Any] | None = None) -> int:
    """Run the daemon on uvloop until it is stopped; return the exit code."""
    # The SQLite thread hands the GIL back and forth with the loop at every statement; a short
    # switch interval keeps it from waiting up to 5 ms behind a busy loop.
    sys.setswitchinterval(SWITCH_INTERVAL)
    configure_logging(
        settings.log_level.value, json={"auto": None, "json": True, "console": False}[settings.log_format]
    )
    if worker_count(settings) > 1:
        return supervise(settings, config_path=config_path, flags=flags)
    return run_daemon(Daemon(settings, config_path=config_path, flags=flags))


def run_daemon(daemon: Daemon) -> int:
    """Run one daemon (the only one, or a supervisor's worker) on uvloop; its exit code."""
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.set_exception_handler(daemon.loop_exception)
    try:
        main = loop.create_task(daemon.run(), name="swarmd-daemon")
        try:
            code = _run_until(loop, main, daemon)
        finally:
            _cancel_leftovers(loop, daemon)
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    sys.stdout.flush()
    return code


def _run_until(loop: asyncio.AbstractEventLoop, main: asyncio.Task[_T], daemon: Daemon) -> _T:
    """Run the loop until ``main`` ends and return its result. A SystemExit or KeyboardInterrupt
    raised by another task (the loop re-raises them from run_until_complete, unlike every other
    exception) is logged, counted and survived: the loop is run again."""
    while True:
        try:
            return loop.run_until_complete(main)
        except (SystemExit, KeyboardInterrupt) as exc:
            if main.done() and not main.cancelled() and main.exception() is exc:
                raise
            if isinstance(exc, KeyboardInterrupt) and not daemon.signals_installed:
                raise  # Ctrl-C during start-up, before SIGINT means "drain"
            daemon.stray_error(exc, "a task nobody awaits raised SystemExit or KeyboardInterrupt: ignored")
            if main.done():
                return main.result()


def _cancel_leftovers(loop: asyncio.AbstractEventLoop, daemon: Daemon) -> None:
    """Cancel the tasks still running once the daemon is done (abandoned job tasks, a handler's
    leftovers) once, give them STRAY_BOUND seconds, and leave the rest: unlike asyncio.Runner,
    never wait for a task that ignores its cancellation."""
    left = [task for task in asyncio.all_tasks(loop) if not task.done()]
    if not left:
        return
    for task in left:
        task.cancel()
    waiting = loop.create_task(asyncio.wait(left, timeout=STRAY_BOUND))
    _run_until(loop, waiting, daemon)
    stuck = [task for task in left if not task.done()]
    if stuck:
        log.warning(
            "tasks_left_running",
            tasks=len(stuck),
            names=[_task_name(task) for task in stuck[:20]],
            detail=f"they ignored their cancellation for {STRAY_BOUND:g}s; exiting without them",
        )


def _task_name(task: object) -> str | None:
    if isinstance(task, asyncio.Task):
        try:
            return str(task.get_name())
        except Exception:
            return None
    return None
