"""Schedules: jobs submitted on a cron expression, and the pure maths of their ticks.

A schedule comes from a ``[[schedule]]`` table of the config or from ``@agent(...,
schedule="*/5 * * * *", gid=...)``. Each *tick* (an instant the expression matches, in the
schedule's time zone) becomes one ordinary job whose idempotency key is `tick_key` — so two
daemons, or a daemon and its restart, cannot both submit it (see swarmd.runtime.scheduler).

Expressions are parsed by `croniter` (time zones through tz-aware datetimes, DST included;
6 fields when the first is seconds; ``@hourly`` and friends; ``H`` hashed on the schedule's
name). Everything here is pure: the clock is an argument, never read. Daylight saving is
croniter's: a wall time skipped in spring fires at the first instant after the gap; one that
occurs twice in autumn (02:30 in Europe/Paris) is two ticks, each fired once.

``catch_up`` says what happens to the ticks that fell while no daemon ran (between the last
tick fired, as the store remembers it, and the daemon's start): ``none`` fires none of them,
``latest`` (the default) fires the most recent one, ``all`` fires each of them, the last
`MAX_CATCH_UP` at most.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from croniter import CroniterError, croniter

from swarmd.errors import ConfigError
from swarmd.model import AGENT_PATTERN, GID_PATTERN

#: Most missed ticks fired at a start with ``catch_up = "all"`` (the latest ones): a state
#: that slept a month under a per-second schedule does not flood the queue.
MAX_CATCH_UP: Final = 1000
_NAME_RE: Final = re.compile(AGENT_PATTERN)
_GID_RE: Final = re.compile(GID_PATTERN)


class CatchUp(enum.StrEnum):
    """What to do with the ticks missed while no daemon ran."""

    NONE = "none"
    LATEST = "latest"
    ALL = "all"


class ScheduleSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """One ``[[schedule]]`` table, as decoded strictly from the config (see `Schedule.from_settings`)."""

    #: The agent that runs each tick's job.
    agent: str
    #: The identity the job speaks for.
    gid: str
    #: The cron expression: 5 fields (minute hour day month weekday), 6 with seconds first.
    cron: str
    #: The schedule's name (metrics label, idempotency key, ``swarmd schedule list``); default: the agent's.
    name: str | None = None
    #: The payload of every tick's job (JSON data).
    payload: Any = None
    #: IANA time zone the expression is read in.
    timezone: str = "UTC"
    #: Ticks missed while no daemon ran: "none", "latest" or "all".
    catch_up: CatchUp = CatchUp.LATEST


@dataclass(frozen=True, slots=True)
class Schedule:
    """A checked schedule: its expression parses and its time zone exists."""

    name: str
    agent: str
    gid: str
    cron: str
    payload: Any = None
    timezone: str = "UTC"
    catch_up: CatchUp = CatchUp.LATEST

    @classmethod
    def checked(
        cls,
        *,
        name: str,
        agent: str,
        gid: str,
        cron: str,
        payload: Any = None,
        timezone: str = "UTC",
        catch_up: CatchUp | str = CatchUp.LATEST,
        where: str,
        source: str = "",
    ) -> Schedule:
        """A schedule whose every field is checked; ConfigError names ``where`` (``schedule[2]``)
        and the key that is wrong."""
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ConfigError(f"{where}.name", f"{name!r} does not match {AGENT_PATTERN}", source)
        if not isinstance(agent, str) or not _NAME_RE.match(agent):
            raise ConfigError(f"{where}.agent", f"{agent!r} does not match {AGENT_PATTERN}", source)
        if not isinstance(gid, str) or not _GID_RE.match(gid):
            raise ConfigError(f"{where}.gid", f"{gid!r} does not match {GID_PATTERN}", source)
        try:
            mode = CatchUp(catch_up)
        except ValueError:
            choices = ", ".join(repr(c.value) for c in CatchUp)
            raise ConfigError(f"{where}.catch_up", f"{catch_up!r} is not one of {choices}", source) from None
        zone_of(timezone, f"{where}.timezone", source)
        check_cron(cron, f"{where}.cron", source, hash_id=name)
        return cls(name, agent, gid, cron, payload, timezone, mode)

    @classmethod
    def from_settings(cls, table: ScheduleSettings, where: str, source: str = "") -> Schedule:
        return cls.checked(
            name=table.name or table.agent,
            agent=table.agent,
            gid=table.gid,
            cron=table.cron,
            payload=table.payload,
            timezone=table.timezone,
            catch_up=table.catch_up,
            where=where,
            source=source,
        )

    # -- tick maths ------------------------------------------------------------------------
    def _iter(self, at: float) -> Any:
        start = datetime.fromtimestamp(at, zone_of(self.timezone, "timezone"))
        return croniter(self.cron, start, hash_id=self.name, second_at_beginning=_has_seconds(self.cron))

    def next_tick(self, after: float) -> float:
        """The first tick strictly after the Unix time ``after``."""
        return float(self._iter(after).get_next(float))

    def ticks_between(self, after: float, until: float, limit: int = MAX_CATCH_UP) -> list[float]:
        """The ticks in (after, until], oldest first; the latest ``limit`` when there are more."""
        ticks: list[float] = []
        # Ticks fall on whole seconds: from floor(until) + 0.5, the previous one is <= until.
        it = self._iter(float(int(until)) + 0.5 if until >= 0 else until)
        while len(ticks) < limit:
            tick = float(it.get_prev(float))
            if tick <= after:
                break
            ticks.append(tick)
        ticks.reverse()
        return ticks

    def missed(self, last: float | None, now: float) -> list[float]:
        """The ticks to fire at a start at ``now``, the last one fired being ``last`` (None:
        never fired here: nothing was missed), per ``catch_up``."""
        if last is None or self.catch_up is CatchUp.NONE:
            return []
        limit = 1 if self.catch_up is CatchUp.LATEST else MAX_CATCH_UP
        return self.ticks_between(last, now, limit)

    def key(self, tick: float) -> str:
        """The idempotency key of this schedule's job for ``tick``."""
        return tick_key(self.name, tick)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "agent": self.agent,
            "gid": self.gid,
            "cron": self.cron,
            "payload": self.payload,
            "timezone": self.timezone,
            "catch_up": self.catch_up.value,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Schedule:
        """A schedule as a daemon published it (see `as_dict`)."""
        return cls(
            name=str(data["name"]),
            agent=str(data["agent"]),
            gid=str(data["gid"]),
            cron=str(data["cron"]),
            payload=data.get("payload"),
            timezone=str(data.get("timezone", "UTC")),
            catch_up=CatchUp(data.get("catch_up", CatchUp.LATEST)),
        )


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """What the store knows of a schedule: its published definition, the last tick fired and
    that tick's job (None: never fired)."""

    name: str
    schedule: Schedule | None = None
    last_tick: float | None = None
    last_job: str | None = None


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """A schedule as ``swarmd schedule list`` shows it: its definition (None where the store
    holds only its ticks), its next tick from now, its last tick fired and that tick's job."""

    name: str
    agent: str | None
    gid: str | None
    cron: str | None
    timezone: str | None
    catch_up: str | None
    next_tick: float | None
    last_tick: float | None
    last_job: str | None

    @classmethod
    def of(cls, state: ScheduleState, now: float) -> ScheduleInfo:
        schedule = state.schedule
        if schedule is None:
            return cls(state.name, None, None, None, None, None, None, state.last_tick, state.last_job)
        return cls(
            state.name,
            schedule.agent,
            schedule.gid,
            schedule.cron,
            schedule.timezone,
            schedule.catch_up.value,
            schedule.next_tick(max(now, state.last_tick or now)),
            state.last_tick,
            state.last_job,
        )

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


def tick_key(name: str, tick: float) -> str:
    """``schedule:<name>:<tick in UTC, ISO 8601 to the second>``."""
    return f"schedule:{name}:{datetime.fromtimestamp(tick, UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"


def _has_seconds(cron: str) -> bool:
    return len(cron.split()) == 6


def zone_of(name: str, key: str, source: str = "") -> ZoneInfo:
    """The IANA time zone ``name``; ConfigError names ``key`` when there is none such."""
    if not isinstance(name, str) or not name or name.startswith(("/", ".")) or ".." in name:
        raise ConfigError(key, f"{name!r} is not an IANA time zone name (like 'UTC' or 'Europe/Paris')", source)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigError(
            key, f"unknown time zone {name!r} (an IANA name, like 'UTC' or 'Europe/Paris')", source
        ) from None


def check_cron(cron: str, key: str, source: str = "", *, hash_id: str = "") -> None:
    """Refuse an expression croniter cannot read, or with a field count other than 5 or 6."""
    if not isinstance(cron, str):
        raise ConfigError(key, f"expected a cron expression (text), got {type(cron).__name__}", source)
    fields = cron.split()
    if not (len(fields) in (5, 6) or (len(fields) == 1 and fields[0].startswith("@"))):
        raise ConfigError(
            key,
            f"{cron!r} has {len(fields)} fields; a cron expression has 5 (minute hour day month weekday), "
            "or 6 with seconds first",
            source,
        )
    try:
        it = croniter(cron, datetime.now(UTC), hash_id=hash_id or None, second_at_beginning=_has_seconds(cron))
        it.get_next(float)  # an expression that never matches (February 30th) fails here
    except (CroniterError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(key, f"{cron!r} is not a valid cron expression: {exc}", source) from None
