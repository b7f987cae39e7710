"""The tick maths of schedules (swarmd.schedules), with every instant given: no clock is read.

Next tick, the ticks between two instants, what a start catches up per ``catch_up``, cron read
in the schedule's time zone (daylight saving included), 6-field expressions with seconds, and
the idempotency key of a tick.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from swarmd.schedules import MAX_CATCH_UP, CatchUp, Schedule, tick_key


def at(text: str, zone: str = "UTC") -> float:
    """Unix time of a wall-clock ``YYYY-MM-DD HH:MM:SS`` in ``zone``."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp()


def schedule(cron: str, *, catch_up: CatchUp = CatchUp.LATEST, timezone: str = "UTC") -> Schedule:
    return Schedule.checked(
        name="report", agent="echo", gid="GID-REPORTS", cron=cron, timezone=timezone, catch_up=catch_up, where="t"
    )


def test_next_tick_is_strictly_after_the_instant() -> None:
    every_five = schedule("*/5 * * * *")
    assert every_five.next_tick(at("2026-01-01 10:02:30")) == at("2026-01-01 10:05:00")
    assert every_five.next_tick(at("2026-01-01 10:05:00")) == at("2026-01-01 10:10:00")


def test_ticks_between_are_those_after_the_first_instant_up_to_the_second_included() -> None:
    every_five = schedule("*/5 * * * *")
    ticks = every_five.ticks_between(at("2026-01-01 10:00:00"), at("2026-01-01 10:15:00"))
    assert ticks == [at("2026-01-01 10:05:00"), at("2026-01-01 10:10:00"), at("2026-01-01 10:15:00")]
    assert every_five.ticks_between(at("2026-01-01 10:00:00"), at("2026-01-01 10:04:59.9")) == []


@pytest.mark.parametrize(
    ("catch_up", "expected"),
    [
        (CatchUp.NONE, []),
        (CatchUp.LATEST, ["10:15:00"]),
        (CatchUp.ALL, ["10:05:00", "10:10:00", "10:15:00"]),
    ],
)
def test_a_start_catches_up_the_ticks_missed_as_catch_up_says(catch_up: CatchUp, expected: list[str]) -> None:
    every_five = schedule("*/5 * * * *", catch_up=catch_up)
    last_fired, start = at("2026-01-01 10:00:00"), at("2026-01-01 10:17:00")
    assert every_five.missed(last_fired, start) == [at(f"2026-01-01 {t}") for t in expected]


def test_a_schedule_never_fired_misses_nothing() -> None:
    assert schedule("*/5 * * * *", catch_up=CatchUp.ALL).missed(None, at("2026-01-01 10:17:00")) == []


def test_catching_up_all_is_bounded_to_the_latest_ticks() -> None:
    every_second = schedule("* * * * * *", catch_up=CatchUp.ALL)
    start = at("2026-01-02 00:00:00")
    missed = every_second.missed(at("2026-01-01 00:00:00"), start)  # a day of ticks missed
    assert len(missed) == MAX_CATCH_UP
    assert missed[-1] == start
    assert missed[0] == start - (MAX_CATCH_UP - 1)


def test_six_fields_put_seconds_first() -> None:
    every_ten_seconds = schedule("*/10 * * * * *")
    assert every_ten_seconds.next_tick(at("2026-01-01 10:00:01")) == at("2026-01-01 10:00:10")


def test_the_expression_is_read_in_the_schedules_time_zone() -> None:
    nine_in_paris = schedule("0 9 * * *", timezone="Europe/Paris")
    # 09:00 in Paris is 08:00 UTC in winter, 07:00 UTC in summer
    assert nine_in_paris.next_tick(at("2026-01-15 00:00:00")) == at("2026-01-15 08:00:00")
    assert nine_in_paris.next_tick(at("2026-07-15 00:00:00")) == at("2026-07-15 07:00:00")


def test_a_day_that_loses_an_hour_to_daylight_saving_still_ticks_once_a_day() -> None:
    daily = schedule("30 2 * * *", timezone="Europe/Paris")  # 02:30 does not exist on 2026-03-29
    ticks = daily.ticks_between(at("2026-03-28 12:00:00", "Europe/Paris"), at("2026-03-31 12:00:00", "Europe/Paris"))
    days = [datetime.fromtimestamp(t, ZoneInfo("Europe/Paris")).date().isoformat() for t in ticks]
    assert days == ["2026-03-29", "2026-03-30", "2026-03-31"]


def test_the_key_of_a_tick_names_the_schedule_and_the_tick_in_utc() -> None:
    tick = at("2026-01-01 09:00:00", "Europe/Paris")
    assert tick_key("report", tick) == "schedule:report:2026-01-01T08:00:00Z"
    assert schedule("0 9 * * *").key(tick) == "schedule:report:2026-01-01T08:00:00Z"
    assert datetime.fromtimestamp(tick, UTC).hour == 8


def test_a_published_schedule_reads_back_equal() -> None:
    original = schedule("*/5 * * * *", catch_up=CatchUp.ALL, timezone="Europe/Paris")
    assert Schedule.from_dict(original.as_dict()) == original


def test_a_wall_time_that_occurs_twice_in_autumn_is_two_ticks() -> None:
    daily = schedule("30 2 * * *", timezone="Europe/Paris")  # 02:30 happens twice on 2026-10-25
    ticks = daily.ticks_between(at("2026-10-24 12:00:00", "Europe/Paris"), at("2026-10-25 12:00:00", "Europe/Paris"))
    assert ticks == [at("2026-10-25 00:30:00"), at("2026-10-25 01:30:00")]  # 02:30 CEST, then 02:30 CET
