"""The scheduler (swarmd.runtime.scheduler) on a real SQLite store, its clock injected: each
tick due becomes one job, once; a scheduler started later catches up per ``catch_up`` what the
store says was missed; two schedulers on one store make one job per tick."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from swarmd.queue.sqlite.backend import DB_NAME, SqliteBackend
from swarmd.runtime.scheduler import Scheduler
from swarmd.schedules import CatchUp, Schedule
from swarmd.telemetry.metrics import Metrics

T0 = datetime(2026, 1, 1, 10, 0, 0, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def every_minute(catch_up: CatchUp = CatchUp.LATEST) -> Schedule:
    return Schedule.checked(
        name="report", agent="echo", gid="GID-REPORTS", cron="* * * * *", catch_up=catch_up, where="t"
    )


@contextlib.asynccontextmanager
async def store(path: Path) -> AsyncIterator[SqliteBackend]:
    backend = SqliteBackend(path)
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


def tick_jobs(path: Path) -> dict[str, str]:
    """Idempotency key -> job id of every schedule job the store holds."""
    with contextlib.closing(sqlite3.connect(path / DB_NAME)) as conn:
        rows = conn.execute("SELECT key, job_id FROM idempotency WHERE key LIKE 'schedule:%'").fetchall()
    return {str(key): str(job_id) for key, job_id in rows}


def minute(n: int) -> str:
    return f"schedule:report:2026-01-01T10:{n:02d}:00Z"


async def test_each_tick_due_becomes_one_job_and_the_store_remembers_the_last(tmp_path: Path) -> None:
    clock = Clock(T0 + 30)
    metrics = Metrics()
    async with store(tmp_path) as backend:
        scheduler = Scheduler(backend, [every_minute()], metrics, clock=clock)
        await scheduler.start()
        assert await scheduler.step() == pytest.approx(30)  # nothing due before 10:01
        clock.now = T0 + 60 * 3 + 1
        await scheduler.step()
        await scheduler.step()  # the same instant again: nothing new
        assert sorted(tick_jobs(tmp_path)) == [minute(1), minute(2), minute(3)]
        [state] = await backend.schedule_states()
        assert (state.last_tick, state.last_job) == (T0 + 180, tick_jobs(tmp_path)[minute(3)])
        assert state.schedule == every_minute()
        assert len(await backend.list_jobs(None, 100)) == 3
    exposed = {s.name: s.value for family in metrics.registry.collect() for s in family.samples}
    assert exposed["swarmd_schedule_last_tick_timestamp_seconds"] == T0 + 180
    assert exposed["swarmd_schedule_next_tick_timestamp_seconds"] == T0 + 240


@pytest.mark.parametrize(
    ("catch_up", "fired_at_start"),
    [(CatchUp.NONE, []), (CatchUp.LATEST, [9]), (CatchUp.ALL, [3, 4, 5, 6, 7, 8, 9])],
)
async def test_a_restart_catches_up_as_catch_up_says_and_fires_no_tick_twice(
    tmp_path: Path, catch_up: CatchUp, fired_at_start: list[int]
) -> None:
    clock = Clock(T0 + 30)
    async with store(tmp_path) as backend:  # the first daemon fires 10:01 and 10:02, then stops
        first = Scheduler(backend, [every_minute(catch_up)], clock=clock)
        await first.start()
        clock.now = T0 + 150
        await first.step()
    assert sorted(tick_jobs(tmp_path)) == [minute(1), minute(2)]
    before = tick_jobs(tmp_path)
    clock.now = T0 + 9 * 60 + 20  # no daemon ran from 10:02:30 to 10:09:20
    async with store(tmp_path) as backend:
        second = Scheduler(backend, [every_minute(catch_up)], clock=clock)
        await second.start()
        await second.step()
        assert sorted(tick_jobs(tmp_path)) == sorted([minute(1), minute(2), *(minute(n) for n in fired_at_start)])
        clock.now = T0 + 10 * 60
        await second.step()
    after = tick_jobs(tmp_path)
    assert minute(10) in after
    assert {key: after[key] for key in before} == before  # the earlier ticks' jobs are the same jobs
    assert len(set(after.values())) == len(after)


async def test_two_schedulers_on_one_store_make_one_job_per_tick(tmp_path: Path) -> None:
    clock = Clock(T0 + 1)
    async with store(tmp_path) as one, store(tmp_path) as other:
        schedulers = [Scheduler(backend, [every_minute()], clock=clock) for backend in (one, other)]
        for scheduler in schedulers:
            await scheduler.start()
        for n in range(1, 4):
            clock.now = T0 + 60 * n
            for scheduler in schedulers:
                await scheduler.step()
        assert sorted(tick_jobs(tmp_path)) == [minute(1), minute(2), minute(3)]
        assert len(await one.list_jobs(None, 100)) == 3
        assert [scheduler.fired for scheduler in schedulers] == [3, 3]  # both fired; the keys kept one job each
