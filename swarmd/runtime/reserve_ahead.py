"""Jobs reserved ahead of free slots, and how many to reserve ahead.

A worker that reserves only for its free slots leaves them idle while each reservation is on
its way: the queue's work and the handlers' take turns. Reserving a few jobs ahead lets a
slot freed by a job's end start the next job at once, while the next reservation is already
on its way.

A job reserved ahead holds a lease and waits here instead of in the queue, where a job of
higher priority submitted meanwhile cannot overtake it. So the worker reserves ahead only as
many jobs as it would start during about two reservation round trips at its current pace
(`ahead_allowance`, kept up to date by `AheadPacing`): jobs that end every few milliseconds
keep a deep pipeline; long-running jobs, which free a slot rarely, get none, and their queue
keeps its priority order. Should the pace drop while jobs wait here (fast jobs followed by
slow ones), a job that has waited `MAX_WAIT` seconds sends them all back to the queue, and
nothing is reserved ahead again until the pace is measured anew.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Final

from swarmd.queue.base import Reserved

#: Reservation round trips' worth of turnover that the jobs reserved ahead may cover.
ROUND_TRIPS: Final = 2.0
#: Seconds a job may wait here before the jobs waiting go back to the queue: far above the
#: few milliseconds of two round trips, it bounds how long a job of higher priority (or, on
#: Redis, another daemon with free slots) can be kept from the jobs reserved here.
MAX_WAIT: Final = 1.0


def ahead_allowance(ended: int, window_s: float, round_trip_s: float, cap: int) -> int:
    """Jobs to reserve beyond the free slots: what the worker would start during
    ``ROUND_TRIPS`` reservation round trips at its recent pace (``ended`` jobs in the last
    ``window_s`` seconds), at most ``cap``."""
    if cap <= 0 or ended <= 0 or window_s <= 0 or round_trip_s <= 0:
        return 0
    # Rounded down: a pace of less than one job per allowance window reserves nothing ahead.
    return min(cap, math.floor(ended / window_s * round_trip_s * ROUND_TRIPS))


class AheadPacing:
    """How many jobs the next reservation may take beyond the free slots, kept in step with
    the pace jobs end at.

    The puller calls `asking` before each reservation and `answered` after it: the pace is
    measured over the jobs ended since the previous reservation (or the last give-back), the
    round trip over this one. A give-back (`gave_back`) while a reservation is on its way
    makes that reservation stale: it was asked for at a pace that has since dropped, and
    sets no allowance.
    """

    __slots__ = ("_asked", "_asked_give_backs", "_give_backs", "_window_ended", "_window_start", "allowance", "policy")

    def __init__(self) -> None:
        #: Jobs the next reservation may take beyond the free slots.
        self.allowance = 0
        #: Sets the allowance from (jobs ended, window seconds, round trip seconds, cap);
        #: replaceable (tests fix it).
        self.policy: Callable[[int, float, float, int], int] = ahead_allowance
        #: Since when (perf_counter) and from which count of ended jobs the pace is measured.
        self._window_start, self._window_ended = time.perf_counter(), 0
        #: Times jobs waiting ahead were given back (a reservation that spans one is stale).
        self._give_backs = 0
        self._asked, self._asked_give_backs = 0.0, 0

    def asking(self) -> None:
        """A reservation is on its way."""
        self._asked, self._asked_give_backs = time.perf_counter(), self._give_backs

    def answered(self, ended: int, cap: int) -> bool:
        """The reservation came back; ``ended``: jobs ended so far, ``cap``: reserve_ahead.
        Sets the allowance from the pace, unless the reservation is stale (returns True)."""
        if self._give_backs != self._asked_give_backs:
            return True
        answered, asked = time.perf_counter(), self._asked
        window = answered - self._window_start
        self.allowance = self.policy(ended - self._window_ended, window, answered - asked, cap)
        self._window_start, self._window_ended = asked, ended
        return False

    def gave_back(self, ended: int) -> None:
        """The jobs waiting ahead went back to the queue: reserve nothing ahead until the pace
        is measured again, from now on (``ended``: jobs ended so far)."""
        self.allowance = 0
        self._give_backs += 1
        self._window_start, self._window_ended = time.perf_counter(), ended


class ReservedAhead:
    """Reserved jobs waiting for a slot, oldest first (reservations come in priority order)."""

    __slots__ = ("_jobs",)

    def __init__(self) -> None:
        #: job id -> (reservation, wall time it was reserved, monotonic time it began to wait)
        self._jobs: OrderedDict[str, tuple[Reserved, float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._jobs)

    def __iter__(self) -> Iterator[str]:
        """The job ids waiting (their leases are renewed like running jobs')."""
        return iter(self._jobs)

    def add(self, reserved: Reserved, reserved_wall: float) -> None:
        """Queue a reservation. Reserved again while waiting here (our lease lapsed and came
        back), the newer reservation replaces the older one, which never ran."""
        self._jobs.pop(reserved.job_id, None)
        self._jobs[reserved.job_id] = (reserved, reserved_wall, time.monotonic())

    def oldest(self) -> tuple[Reserved, float]:
        """The job waiting longest and when it was reserved (the wall clock), left in place."""
        reserved, reserved_wall, _ = next(iter(self._jobs.values()))
        return reserved, reserved_wall

    def pop_oldest(self) -> tuple[Reserved, float]:
        reserved, reserved_wall, _ = self._jobs.popitem(last=False)[1]
        return reserved, reserved_wall

    def pop(self, job_id: str) -> Reserved | None:
        """Take a job out (a cancel request), or None if it is not waiting here."""
        entry = self._jobs.pop(job_id, None)
        return None if entry is None else entry[0]

    def longest_wait(self) -> float:
        """Seconds the oldest job has waited here (0.0 when none waits)."""
        if not self._jobs:
            return 0.0
        return time.monotonic() - next(iter(self._jobs.values()))[2]
