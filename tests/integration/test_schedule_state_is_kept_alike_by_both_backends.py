"""What both backends keep of schedules (QueueBackend.publish_schedules, record_tick,
schedule_states): the last tick only moves forward, a publish keeps the ticks, and a schedule
no longer published keeps its ticks but loses its definition. SQLite in a tmp_path, Redis under
a key prefix of its own (deleted afterwards; skipped without Redis unless SWARMD_TEST_STRICT=1)."""

from __future__ import annotations

from collections.abc import Callable

from support.backends import make_backend, opened

from swarmd.queue.base import QueueBackend
from swarmd.schedules import CatchUp, Schedule, ScheduleState

__all__ = ["make_backend"]  # the fixture, on both backends


def schedule(name: str, cron: str = "*/5 * * * *") -> Schedule:
    return Schedule.checked(name=name, agent="echo", gid="GID-1", cron=cron, catch_up=CatchUp.ALL, where="t")


async def test_the_last_tick_only_moves_forward(make_backend: Callable[[], QueueBackend]) -> None:
    async with opened(make_backend) as one, opened(make_backend) as other:
        await one.publish_schedules([schedule("report")])
        await one.record_tick("report", 600.0, "job-600")
        await other.record_tick("report", 300.0, "job-300")  # a slower daemon, an older tick
        await other.record_tick("report", 600.0, "job-again")  # the same tick: the first job stays
        assert await other.schedule_states() == [ScheduleState("report", schedule("report"), 600.0, "job-600")]
        await other.record_tick("report", 900.0, "job-900")
        assert [(s.last_tick, s.last_job) for s in await one.schedule_states()] == [(900.0, "job-900")]


async def test_a_publish_keeps_the_ticks_and_drops_the_definitions_no_longer_fired(
    make_backend: Callable[[], QueueBackend],
) -> None:
    async with opened(make_backend) as backend:
        await backend.publish_schedules([schedule("report"), schedule("nightly", "0 3 * * *")])
        await backend.record_tick("nightly", 3600.0, "job-n")
        await backend.publish_schedules([schedule("report", "*/10 * * * *")])
        assert await backend.schedule_states() == [
            ScheduleState("nightly", None, 3600.0, "job-n"),
            ScheduleState("report", schedule("report", "*/10 * * * *"), None, None),
        ]
    async with opened(make_backend) as backend:  # and it is all durable: a new connection reads it back
        assert [state.name for state in await backend.schedule_states()] == ["nightly", "report"]
