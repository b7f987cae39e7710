"""`swarmd serve --workers N` (N > 1): one supervisor process and N worker processes.

The supervisor holds what there is one of: the state lock (SQLite), the HTTP listener
(``/metrics`` re-exposes every worker's registry with a ``worker`` label:
swarmd.runtime.worker_metrics), sd_notify, the signals, and the SQLite wake socket (relayed to
every worker: swarmd.queue.sqlite.wake.WakeRelay). Each worker
(``python -m swarmd.runtime.worker_process``, a fresh interpreter: no fork of a process with
threads or a loop) runs a whole daemon on the shared queue: its event loop, TaskGroup, handlers
and committer (swarmd.runtime.daemon, in the role of a `WorkerRole`).

- Start: lock, then (SQLite) return every lease of a dead predecessor while no worker runs,
  bind the listener, start the workers; ``READY=1`` once every worker said it is ready.
- ``WATCHDOG=1`` only while every worker is alive and beating (its loop turning).
- A worker that dies is restarted after a backoff (swarmd.policies.restarts), counted in
  ``swarmd_worker_restarts_total{worker}`` and logged (``worker_died``); its leases come back
  as a dead daemon's do, when they expire. A worker that crashes on a job writes a crash record
  first, so a poison job is dead-lettered by a later worker (swarmd.runtime.crashes).
- SIGTERM/SIGINT: ``STOPPING=1`` and SIGTERM to every worker at once, so all drain within the
  one grace period (a second signal is passed on: hurry); a worker still running
  `STOP_MARGIN` seconds after the grace period is killed. SIGHUP is passed on to every worker.
- The supervisor dying, however, takes its workers with it: each armed PR_SET_PDEATHSIG, and
  reads end-of-file on its control socket (swarmd.runtime.worker_link).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec
import structlog

from swarmd.config import RELOADABLE, Settings, listen_address, load_settings, resolve_state_dir, worker_count
from swarmd.errors import error_text
from swarmd.policies.restarts import RestartBackoff
from swarmd.queue.factory import open_backend
from swarmd.queue.sqlite.wake import WakeRelay, worker_socket_name
from swarmd.runtime.httpserver import HttpServer
from swarmd.runtime.sdnotify import notify, watchdog_interval
from swarmd.runtime.statedir import StateLock, prepare
from swarmd.runtime.worker_link import (
    MAX_MESSAGE,
    SPEC_ENV,
    Beat,
    Committed,
    CrashesChanged,
    WorkerSpec,
    decode_message,
    encode_message,
    metrics_socket,
)
from swarmd.runtime.worker_metrics import WorkersCollector
from swarmd.telemetry.supervisor_metrics import SupervisorMetrics
from swarmd.version import __version__

__all__ = ["STOP_MARGIN", "Supervisor", "supervise"]

log = structlog.get_logger("swarmd.supervisor")

#: Seconds past the grace period a draining worker gets before it is killed.
STOP_MARGIN: Final = 10.0
#: A worker whose last beat is older than this is stalled (/healthz fails, no WATCHDOG=1).
STALL_SECONDS: Final = 2.0


@dataclass(slots=True)
class Slot:
    """One worker's place: the process in it now (None between a death and its restart)."""

    index: int
    backoff: RestartBackoff = field(default_factory=RestartBackoff)
    process: asyncio.subprocess.Process | None = None
    sock: socket.socket | None = None
    started: float = 0.0
    last_beat: float | None = None
    ready: bool = False
    reason: str = "starting"
    restart_at: float | None = None
    #: A process in this slot got through its start once (it beat): later deaths are restarted.
    started_once: bool = False


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        *,
        config_path: Path | None = None,
        flags: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        self.flags = dict(flags or {})
        self.environ = os.environ if environ is None else environ
        self.slots = [Slot(index) for index in range(worker_count(settings))]
        self.stopping = False
        self.state_dir: Path | None = None
        self.metrics = SupervisorMetrics(len(self.slots), running=self.running)
        self._stopped = asyncio.Event()
        self._all_ready_once = False
        #: The exit code: 0, or that of a worker that could not start (bad agents, bad state).
        self.exit_code = 0

    # -- what /healthz, /readyz and the watchdog read (plain values; any thread) -------------
    def running(self) -> int:
        return sum(1 for slot in self.slots if slot.process is not None and slot.process.returncode is None)

    def _beating(self, slot: Slot, now: float) -> bool:
        return slot.last_beat is not None and now - slot.last_beat <= STALL_SECONDS

    def health(self) -> tuple[bool, str]:
        now = time.monotonic()
        for slot in self.slots:
            if slot.process is not None and slot.last_beat is not None and not self._beating(slot, now):
                return False, f"worker {slot.index}: event loop has not turned for {now - slot.last_beat:.1f}s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        """Ready when every worker is alive, beating and ready; else why not, worker by worker."""
        if self.stopping:
            return False, "draining"
        now = time.monotonic()
        problems = [f"worker {slot.index}: {why}" for slot in self.slots if (why := self._not_ready(slot, now))]
        return (False, "; ".join(problems)) if problems else (True, "ok")

    def _not_ready(self, slot: Slot, now: float) -> str | None:
        if slot.process is None:
            return "restarting" if slot.restart_at is None else f"restarting in {max(0.0, slot.restart_at - now):.1f}s"
        if slot.last_beat is None:
            return "starting"
        if not self._beating(slot, now):
            return f"event loop has not turned for {now - slot.last_beat:.1f}s"
        return None if slot.ready else slot.reason or "not ready"

    # -- life ------------------------------------------------------------------------------
    async def run(self) -> int:
        settings = self.settings
        state_dir = self.state_dir = prepare(resolve_state_dir(settings.state_dir, self.environ))
        lock = StateLock(state_dir) if settings.backend == "sqlite" else None
        if lock is not None:
            lock.acquire()
        try:
            recovered = await self._recover(state_dir)
            collector = WorkersCollector(self._metric_sockets)
            self.metrics.registry.register(collector)
            host, port = listen_address(settings)
            http = HttpServer(host, port, self.metrics.registry, health=self.health, ready=self.ready)
            http.start()
            relay = WakeRelay(state_dir, self._wake_targets) if settings.backend == "sqlite" else None
            try:
                if relay is not None and not relay.start():
                    log.warning("wake_socket_unavailable", path=str(relay.path), fallback="poll_interval")
                self._install_signals()
                log.info(
                    "supervisor_started",
                    version=__version__,
                    pid=os.getpid(),
                    workers=len(self.slots),
                    backend=settings.backend,
                    state_dir=str(state_dir),
                    listen=http.address,
                    recovered_leases=recovered,
                )
                watchdog = asyncio.get_running_loop().create_task(self._watchdog())
                try:
                    async with asyncio.TaskGroup() as group:
                        for slot in self.slots:
                            group.create_task(self._keep(slot), name=f"swarmd-worker-{slot.index}")
                finally:
                    watchdog.cancel()
            finally:
                if relay is not None:
                    relay.stop()
                http.stop()
            log.info("stopped", pid=os.getpid(), exit=self.exit_code)
            return self.exit_code
        finally:
            if lock is not None:
                lock.release()

    async def _recover(self, state_dir: Path) -> int:
        """SQLite: every lease back to the queue while no worker runs (the lock proves their
        holder dead), and the file checked. Redis: each worker returns its own, as a daemon does."""
        if self.settings.backend != "sqlite":
            return 0
        backend = open_backend(self.settings, state_dir, check_integrity=True)
        await backend.open()
        try:
            return await backend.recover(all_leases=True)
        finally:
            await backend.close()

    def _metric_sockets(self) -> dict[str, Path]:
        assert self.state_dir is not None
        return {str(s.index): metrics_socket(self.state_dir, s.index) for s in self.slots if s.process is not None}

    def _wake_targets(self) -> list[Path]:
        assert self.state_dir is not None
        return [self.state_dir / worker_socket_name(s.index) for s in self.slots if s.process is not None]

    async def _keep(self, slot: Slot) -> None:
        """Run a worker in ``slot``, restarting it after a backoff each time it dies, until the
        supervisor stops."""
        while not self.stopping:
            code = await self._run_once(slot)
            if self._stopped.is_set():  # it drained, as asked (or died draining: not restarted)
                log.info("worker_exited", worker=slot.index, exit=_describe_exit(code))
                break
            if not slot.started_once:  # it never got through its start: no restart will either
                log.error("worker_failed_to_start", worker=slot.index, exit=_describe_exit(code), action="stop all")
                self.exit_code = code if code > 0 else 1
                self._stop_all()
                break
            delay = slot.backoff.died(started=slot.started, now=time.monotonic())
            slot.restart_at = time.monotonic() + delay
            self.metrics.restarted(slot.index)
            log.error(
                "worker_died",
                worker=slot.index,
                exit=_describe_exit(code),
                ran_s=round(time.monotonic() - slot.started, 3),
                deaths_in_a_row=slot.backoff.in_a_row,
                restart_in_s=delay,
            )
            if code == 1:  # a crash: it wrote a crash record first (swarmd.runtime.crashes)
                self._tell_others(slot, CrashesChanged())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), delay)
            slot.restart_at = None

    async def _run_once(self, slot: Slot) -> int:
        """Start a worker in ``slot``, read its messages until it exits; its exit code."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            spec = WorkerSpec(
                index=slot.index,
                settings=msgspec.to_builtins(self.settings),
                config_path=None if self.config_path is None else str(self.config_path),
                flags=self.flags,
                control_fd=theirs.fileno(),
                supervisor_pid=os.getpid(),
                recover_all_leases=self.settings.backend != "sqlite",
            )
            env = {**self.environ, SPEC_ENV: msgspec.json.encode(spec).decode()}
            env.pop("NOTIFY_SOCKET", None)  # the supervisor speaks to systemd for its workers
            env.pop("LISTEN_FDS", None)
            slot.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "swarmd.runtime.worker_process",
                env=env, pass_fds=(theirs.fileno(),), start_new_session=True,
            )  # fmt: skip
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        slot.sock, slot.started, slot.last_beat = mine, time.monotonic(), None
        slot.ready, slot.reason = False, "starting"
        process = slot.process
        log.info("worker_started", worker=slot.index, pid=process.pid)
        if self.stopping:  # a stop came while it started: it drains too
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        try:
            await self._read(slot, mine)
            return await process.wait()
        finally:
            mine.close()
            slot.process = slot.sock = None
            slot.ready = False

    async def _read(self, slot: Slot, sock: socket.socket) -> None:
        """The worker's messages, until end-of-file (it exited)."""
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = await loop.sock_recv(sock, MAX_MESSAGE)
            except OSError:
                return
            if not data:
                return
            try:
                message = decode_message(data)
            except msgspec.DecodeError:
                continue
            if isinstance(message, Beat):
                slot.started_once = True
                slot.last_beat, slot.ready, slot.reason = time.monotonic(), message.ready, message.reason
                if message.ready and not self._all_ready_once and self.ready()[0]:
                    self._all_ready_once = True
                    log.info("ready", workers=len(self.slots))
                    notify(
                        f"READY=1\nSTATUS=serving {self.settings.backend} queue {self.settings.queue} "
                        f"with {len(self.slots)} workers\nMAINPID={os.getpid()}",
                        self.environ,
                    )
            elif isinstance(message, Committed):
                self._forward(message)

    def _forward(self, message: Committed) -> None:
        """Another worker's commits, to worker 0, whose API socket has the waiters."""
        first = self.slots[0].sock
        if first is not None:
            with contextlib.suppress(OSError):  # gone, or full: its waiters' backstop covers it
                first.send(encode_message(message))

    def _tell_others(self, slot: Slot, message: CrashesChanged) -> None:
        for other in self.slots:
            if other is not slot and other.sock is not None:
                with contextlib.suppress(OSError):
                    other.sock.send(encode_message(message))

    async def _watchdog(self) -> None:
        interval = watchdog_interval(self.environ)
        if interval is None:
            return
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            if all(slot.process is not None and self._beating(slot, now) for slot in self.slots):
                notify("WATCHDOG=1", self.environ)

    # -- signals ---------------------------------------------------------------------------
    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_stop, signum)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload)

    def _on_stop(self, signum: signal.Signals) -> None:
        log.info("signal", signal=signum.name, action="hurry" if self.stopping else "drain", workers=self.running())
        self._stop_all()

    def _stop_all(self) -> None:
        """Drain every worker (the first time), or tell them to hurry (each later time)."""
        if not self.stopping:
            self.stopping = True
            self._stopped.set()
            notify("STOPPING=1", self.environ)
            asyncio.get_running_loop().call_later(self.settings.grace_seconds + STOP_MARGIN, self._kill_stragglers)
        self._signal_workers(signal.SIGTERM)

    def _kill_stragglers(self) -> None:
        left = [slot.index for slot in self.slots if slot.process is not None and slot.process.returncode is None]
        if left:
            log.error("workers_killed", workers=left, reason=f"still running {STOP_MARGIN:g}s after the grace period")
            self._signal_workers(signal.SIGKILL)

    def _on_reload(self) -> None:
        """SIGHUP: every worker reloads; the supervisor keeps the live keys for the workers it
        starts later."""
        self._signal_workers(signal.SIGHUP)
        try:
            fresh = load_settings(config_path=self.config_path, flags=self.flags, environ=self.environ)
        except Exception as exc:
            log.error("reload_failed", error=error_text(exc))
            return
        self.settings = msgspec.structs.replace(self.settings, **{key: getattr(fresh, key) for key in RELOADABLE})

    def _signal_workers(self, signum: int) -> None:
        for slot in self.slots:
            if slot.process is not None and slot.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.process.send_signal(signum)


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit {code}"


def supervise(settings: Settings, *, config_path: Path | None = None, flags: Mapping[str, Any] | None = None) -> int:
    """Run the supervisor and its workers until stopped; the exit code."""
    supervisor = Supervisor(settings, config_path=config_path, flags=flags)
    return asyncio.run(supervisor.run())
