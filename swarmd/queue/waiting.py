"""Waiting for jobs to finish, woken by the commit of their outcomes, with a slow backstop.

Both backends wait the same way (`wait_for_entries`): look at the ledger once, then sleep until
a notification names one of the jobs (the commit of its outcome sent it) or the backstop
interval passes, and look again. A backend subscribes to its notifications BEFORE the first
look, so an outcome committed in between is never missed; the backstop only covers a lost
notification (a Redis that restarted, a push not yet wired).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Final

from swarmd.ledger.chain import StoredEntry

#: Seconds between two looks at the ledger while no notification arrives (default).
DEFAULT_BACKSTOP: Final = 1.0
#: The environment variable that sets the backstop (seconds) for every waiter of this process.
BACKSTOP_ENV: Final = "SWARMD_WAIT_BACKSTOP"

#: Reads the ledger entries of the given job ids (those that have one).
Fetch = Callable[[list[str]], Awaitable[list[StoredEntry]]]
#: Waits at most the given seconds for a notification; returns the job ids it names (empty:
#: none came), or None when it came but cannot say which jobs (look at all of them).
Notified = Callable[[float], Awaitable[set[str] | None]]
#: A push from the daemon for a backend that has none of its own (SQLite): waits at most the
#: given seconds for the commit of one of the given jobs; returns the job ids committed.
Push = Callable[[list[str], float], Awaitable[set[str] | None]]


def backstop_interval(value: float | None = None) -> float:
    """The backstop to use: ``value``, else `BACKSTOP_ENV`, else `DEFAULT_BACKSTOP`."""
    if value is None:
        raw = os.environ.get(BACKSTOP_ENV)
        value = float(raw) if raw else DEFAULT_BACKSTOP
    if not value > 0:
        raise ValueError(f"the wait backstop must be a positive number of seconds, not {value!r}")
    return value


async def wait_for_entries(
    fetch: Fetch,
    job_ids: Collection[str],
    timeout: float | None,  # noqa: ASYNC109 - a bound, in seconds, that this loop applies itself
    backstop: float,
    notified: Notified,
    *,
    every: bool = False,
) -> dict[str, StoredEntry]:
    """The entries of those of ``job_ids`` that have finished, as soon as one has (``every``:
    once all have), at once if that is so already; when ``timeout`` seconds pass first (None: no
    limit), those found by then (possibly none)."""
    wanted = list(dict.fromkeys(job_ids))
    found: dict[str, StoredEntry] = {}
    # Real time, not the loop's: uvloop's clock counts whole milliseconds, rounded down, so a
    # deadline on it can pass up to a millisecond before ``timeout`` seconds have.
    deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)

    async def look() -> bool:
        pending = [job_id for job_id in wanted if job_id not in found]
        found.update((entry.job_id, entry) for entry in await fetch(pending) if entry.job_id is not None)
        return bool(found) and (not every or len(found) == len(wanted))

    while not await look():
        next_look = time.monotonic() + backstop
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                await look()
                return found
            if now >= next_look:
                break
            ids = await notified((next_look if deadline is None else min(next_look, deadline)) - now)
            if ids is None or any(job_id in ids and job_id not in found for job_id in wanted):
                break
    return found


class FinishedWaiters:
    """Who waits for which jobs to finish: job id -> the waiters' futures, each resolved with
    the job ids of the commit that woke it (None: woken to look, as when the source of the
    notifications went away). The daemon's API socket keeps one (its commits wake it); so does
    a client that waits through that socket (its pump's answers wake it)."""

    def __init__(self) -> None:
        self._waiting: dict[str, set[asyncio.Future[set[str] | None]]] = {}

    def register(self, job_ids: Iterable[str]) -> asyncio.Future[set[str] | None]:
        """A future resolved with the job ids of the first commit that records any of these."""
        future: asyncio.Future[set[str] | None] = asyncio.get_running_loop().create_future()
        for job_id in job_ids:
            self._waiting.setdefault(job_id, set()).add(future)
        return future

    def forget(self, job_ids: Iterable[str], future: asyncio.Future[set[str] | None]) -> None:
        """Drop a waiter (answered, timed out or gone): nothing of it is left behind."""
        for job_id in job_ids:
            futures = self._waiting.get(job_id)
            if futures is not None:
                futures.discard(future)
                if not futures:
                    del self._waiting[job_id]

    def committed(self, job_ids: Iterable[str]) -> None:
        """These jobs' outcomes are committed: wake whoever waits for them."""
        if not self._waiting:
            return
        woken: dict[asyncio.Future[set[str] | None], set[str]] = {}
        for job_id in job_ids:
            for future in self._waiting.get(job_id, ()):
                woken.setdefault(future, set()).add(job_id)
        for future, ids in woken.items():
            if not future.done():
                future.set_result(ids)

    def wake_all(self, result: set[str] | None) -> None:
        """Wake every waiter with ``result`` (None: look, the notifications may have been lost)."""
        for futures in list(self._waiting.values()):
            for future in futures:
                if not future.done():
                    future.set_result(result)

    def job_ids(self) -> list[str]:
        """The job ids someone waits for now."""
        return list(self._waiting)

    def __len__(self) -> int:
        """How many job ids someone waits for (for tests and metrics)."""
        return len(self._waiting)
