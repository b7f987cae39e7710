"""How both backends store what they know of a schedule: one JSON object per schedule,
``{"schedule": <definition or null>, "last_tick": <Unix time or null>, "last_job": <id or null>}``.

A stored value that cannot be read (written by hand, or by a future swarmd) reads as a schedule
whose definition and ticks are unknown, never as an error: the scheduler then fires as for a new
schedule, and the idempotency key of each tick still keeps it from firing one twice.
"""

from __future__ import annotations

from typing import Any

import msgspec

from swarmd.schedules import Schedule, ScheduleState


def encode_state(state: ScheduleState) -> str:
    return msgspec.json.encode(
        {
            "schedule": state.schedule.as_dict() if state.schedule is not None else None,
            "last_tick": state.last_tick,
            "last_job": state.last_job,
        }
    ).decode()


def decode_state(name: str, raw: str | bytes) -> ScheduleState:
    try:
        data: Any = msgspec.json.decode(raw)
        schedule = Schedule.from_dict(data["schedule"]) if data.get("schedule") is not None else None
        tick = data.get("last_tick")
        job = data.get("last_job")
        return ScheduleState(
            name,
            schedule,
            float(tick) if isinstance(tick, int | float) else None,
            str(job) if isinstance(job, str) else None,
        )
    except (msgspec.DecodeError, AttributeError, KeyError, TypeError, ValueError):
        return ScheduleState(name)
