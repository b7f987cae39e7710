"""Who waits for which jobs to finish, woken by the daemon's own commits.

The API socket's ``wait_finished`` registers here before it looks at the ledger; the worker
tells `committed` the jobs each commit of outcomes recorded, right after the commit, so a
waiter learns of an outcome as soon as it is durable, without reading the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


class FinishedWaiters:
    """Job id -> the futures of the waiters for it; each future gets the job ids committed."""

    def __init__(self) -> None:
        self._waiting: dict[str, set[asyncio.Future[set[str]]]] = {}

    def register(self, job_ids: Iterable[str]) -> asyncio.Future[set[str]]:
        """A future resolved with the job ids of the first commit that records any of these."""
        future: asyncio.Future[set[str]] = asyncio.get_running_loop().create_future()
        for job_id in job_ids:
            self._waiting.setdefault(job_id, set()).add(future)
        return future

    def forget(self, job_ids: Iterable[str], future: asyncio.Future[set[str]]) -> None:
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
        woken: dict[asyncio.Future[set[str]], set[str]] = {}
        for job_id in job_ids:
            for future in self._waiting.get(job_id, ()):
                woken.setdefault(future, set()).add(job_id)
        for future, ids in woken.items():
            if not future.done():
                future.set_result(ids)

    def __len__(self) -> int:
        """How many job ids someone waits for (for tests and metrics)."""
        return len(self._waiting)
