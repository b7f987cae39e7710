"""The worker's parts on their own: the running jobs, the committer, a reload's settings.

The worker's tests cover them together; these pin what each part promises by itself.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

from prometheus_client import CollectorRegistry

from swarmd.builtin_agents import register_builtins
from swarmd.config import Settings
from swarmd.errors import BackendUnavailable
from swarmd.queue.base import Disposition, Finish, FinishReport, QueueBackend, Reserved
from swarmd.queue.sqlite.backend import SqliteBackend
from swarmd.registry import Registry
from swarmd.runtime.committer import Committer
from swarmd.runtime.daemon import Daemon
from swarmd.runtime.execution import CANCEL_DRAIN, CANCEL_REQUESTED, CANCEL_TIMEOUT, Attempt
from swarmd.runtime.health import Health
from swarmd.runtime.running import RunningJobs
from swarmd.runtime.worker import Worker
from swarmd.telemetry.metrics import Metrics
from swarmd.telemetry.tracing import Tracing


def _task(name: str) -> asyncio.Task[Attempt]:
    """A job task that runs until cancelled."""
    return cast("asyncio.Task[Attempt]", asyncio.get_running_loop().create_task(asyncio.Event().wait(), name=name))


async def test_a_running_job_keeps_the_first_cancel_reason_and_gives_it_back_once_when_forgotten() -> None:
    running = RunningJobs()
    task, reserved = _task("j"), Reserved("j", None, 1)
    running.add(task, reserved)
    assert list(running) == ["j"] and len(running) == 1 and running.lookup("j") == (task, reserved)
    assert running.cancel("j", CANCEL_REQUESTED)
    assert running.cancel("j", CANCEL_DRAIN)  # cancelled again: a requested cancel stays one
    assert running.cancel("other", CANCEL_REQUESTED) is False  # not running here
    assert running.reasons == {"j": CANCEL_REQUESTED}
    await asyncio.gather(task, return_exceptions=True)
    assert running.forget(task, "j") == (reserved, CANCEL_REQUESTED)
    assert len(running) == 0 and running.reasons == {} and running.lookup("j") is None


async def _swallowing(stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await stop.wait()
        except asyncio.CancelledError:
            continue


async def test_a_run_that_ignores_its_cancel_is_handed_to_on_stuck_and_abandoned() -> None:
    running = RunningJobs(abandon_after=0.01)
    stuck: asyncio.Queue[tuple[asyncio.Task[Attempt], str]] = asyncio.Queue()
    running.on_stuck = lambda task, job_id: stuck.put_nowait((task, job_id))
    stop = asyncio.Event()
    task = cast("asyncio.Task[Attempt]", asyncio.get_running_loop().create_task(_swallowing(stop), name="j"))
    reserved = Reserved("j", None, 1)
    running.add(task, reserved)
    await asyncio.sleep(0)  # it runs (a task cancelled before its first step never starts)
    assert running.cancel("j", CANCEL_TIMEOUT)
    assert await asyncio.wait_for(stuck.get(), 5) == (task, "j")
    assert running.abandon(task, "j") == (reserved, CANCEL_TIMEOUT)
    assert (running.runs(), running.abandoned, running.reasons) == (0, 1, {})
    assert running.abandon(task, "j") is None  # once
    # The job may run again here meanwhile; the abandoned task's end is told apart from it.
    again = _task("j")
    running.add(again, Reserved("j", None, 2))
    stop.set()  # it ends at last
    await asyncio.gather(task, return_exceptions=True)
    assert running.forget(task, "j") is None
    assert running.abandoned == 0 and running.lookup("j") == (again, Reserved("j", None, 2))
    again.cancel()


async def test_a_timeout_does_not_cancel_a_job_whose_task_has_ended() -> None:
    running = RunningJobs()
    task = _task("j")
    running.add(task, Reserved("j", None, 1))
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert running.cancel("j", CANCEL_TIMEOUT, unless_done=True) is False
    assert running.reasons == {}


async def test_a_job_reserved_again_while_it_runs_is_tracked_twice_until_each_run_ends() -> None:
    running = RunningJobs()
    older, newer = _task("j"), _task("j")
    first, second = Reserved("j", None, 1, handle="first"), Reserved("j", None, 2, handle="second")
    running.add(older, first)
    running.add(newer, second)
    assert (len(running), running.displaced, running.runs()) == (1, 1, 2)
    assert running.lookup("j") == (newer, second)
    newer.set_name("renamed by its handler")
    tasks = running.cancel_all(CANCEL_DRAIN)
    assert set(tasks) == {older, newer}
    await asyncio.gather(*tasks, return_exceptions=True)
    assert running.forget(older, "j") == (first, CANCEL_DRAIN)
    assert running.forget(newer, newer.get_name()) == (second, None)  # found by its task
    assert running.runs() == 0


class _FlakyBackend:
    """A backend whose first ``failures`` commits fail (the queue is unreachable)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.failed = asyncio.Event()
        self.committed: list[list[str]] = []

    async def finish(self, finishes: list[Finish]) -> FinishReport:
        if self.failures:
            self.failures -= 1
            self.failed.set()
            raise BackendUnavailable("queue unreachable")
        self.committed.append([finish.job_id for finish in finishes])
        return FinishReport(ledger_index=len(self.committed) - 1)


def _commit_error(health: Health) -> str | None:
    return health.commit_error


def _attempt(job_id: str) -> Attempt:
    reserved = Reserved(job_id, None, 1)
    return Attempt(reserved, Finish(job_id, Disposition.RELEASE), None)


async def test_a_failed_commit_is_retried_until_it_succeeds_and_commits_the_group_once() -> None:
    backend = _FlakyBackend(failures=1)
    health = Health()
    committed: list[tuple[list[str], int | None]] = []
    recovered = asyncio.Event()
    done = asyncio.Event()

    def on_committed(batch: list[Attempt], report: FinishReport) -> None:
        committed.append(([attempt.reserved.job_id for attempt in batch], report.ledger_index))
        done.set()

    committer = Committer(
        cast(QueueBackend, backend),
        Metrics(CollectorRegistry(), agents=[]),
        health,
        batch_size=10,
        in_flight=lambda: 0,
        committed=on_committed,
        recovered=recovered.set,
    )
    run = asyncio.get_running_loop().create_task(committer.run())
    committer.hand_over(_attempt("a"))
    committer.hand_over(_attempt("b"))
    await backend.failed.wait()
    assert _commit_error(health) == "BackendUnavailable: queue unreachable" and committer.uncommitted == 2
    await done.wait()
    assert recovered.is_set() and _commit_error(health) is None
    assert committed == [(["a", "b"], 0)] and backend.committed == [["a", "b"]]
    assert committer.uncommitted == 0
    committer.close()
    await asyncio.wait_for(run, 10)


def _worker(tmp_path: Path, settings: Settings) -> Worker:
    registry = Registry()
    register_builtins(registry)
    metrics = Metrics(CollectorRegistry(), agents=registry.names())
    return Worker(SqliteBackend(tmp_path), registry, settings, metrics, Tracing(None))


async def test_a_reload_takes_a_new_settings_snapshot_with_only_the_live_keys_changed(tmp_path: Path) -> None:
    settings = Settings(max_concurrent=2, poll_interval=0.05)
    worker = _worker(tmp_path, settings)
    worker.reload(Settings(max_concurrent=4, poll_interval=3.0, concurrency="adaptive", min_concurrent=3))
    assert (settings.max_concurrent, settings.concurrency) == (2, "fixed")  # never changed in place
    new = worker.settings
    assert new is not settings
    assert (new.max_concurrent, new.min_concurrent, new.concurrency, new.poll_interval) == (4, 3, "adaptive", 0.05)
    assert worker.limit.limit == 4


async def test_sighup_hands_the_worker_a_snapshot_of_the_reloadable_keys(tmp_path: Path) -> None:
    config = tmp_path / "swarmd.toml"
    config.write_text('max_concurrent = 7\npoll_interval = 3.0\nlog_level = "info"\n')
    settings = Settings(max_concurrent=2, poll_interval=0.05)
    daemon = Daemon(settings, config_path=config, environ={})
    worker = _worker(tmp_path, settings)
    await daemon._reload(worker)
    assert settings.max_concurrent == 2  # the settings the daemon started with are unchanged
    reloaded: Any = daemon.settings
    assert (reloaded.max_concurrent, reloaded.poll_interval) == (7, 0.05)  # poll_interval takes a restart
    assert worker.settings.max_concurrent == 7 and worker.limit.limit == 7
