"""The jobs running in one worker, and why any of them is being cancelled.

One owner for that state: the worker adds a run when it starts a job task and forgets it when
the task ends; the worker (a cancel request, the drain) and the job runner (a timeout) cancel
runs with a reason, recorded before the task is cancelled; the runner takes the reason back
when the handler ends, to tell a cancel on purpose from one nobody asked for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

import structlog

from swarmd.queue.base import Reserved

if TYPE_CHECKING:
    from swarmd.runtime.execution import Attempt

log = structlog.get_logger("swarmd.worker")


class RunningJobs:
    """Job id -> its running task and reservation, plus older runs of jobs reserved again while
    they ran, and the cancel reason of each job being cancelled."""

    __slots__ = ("_displaced", "_reasons", "_runs")

    def __init__(self) -> None:
        self._runs: dict[str, tuple[asyncio.Task[Attempt], Reserved]] = {}
        #: Older runs of jobs reserved again while they ran here (see `add`), until they end.
        self._displaced: dict[asyncio.Task[Attempt], Reserved] = {}
        #: Job id -> why it is being cancelled (set before Task.cancel()).
        self._reasons: dict[str, str] = {}

    def __len__(self) -> int:
        """How many jobs run (a job running twice counts once: see `displaced`)."""
        return len(self._runs)

    def __iter__(self) -> Iterator[str]:
        """The ids of the jobs running (their leases are renewed)."""
        return iter(self._runs)

    @property
    def displaced(self) -> int:
        """How many older runs of jobs reserved again while they ran are still running."""
        return len(self._displaced)

    @property
    def reasons(self) -> Mapping[str, str]:
        """The cancel reasons recorded and not yet taken back (read-only)."""
        return MappingProxyType(self._reasons)

    def runs(self) -> int:
        """How many job tasks run, older runs of the same job included."""
        return len(self._runs) + len(self._displaced)

    def lookup(self, job_id: str) -> tuple[asyncio.Task[Attempt], Reserved] | None:
        """The task and reservation of a running job, or None."""
        return self._runs.get(job_id)

    def add(self, task: asyncio.Task[Attempt], reserved: Reserved) -> None:
        """Track a job task just started for ``reserved``."""
        job_id = reserved.job_id
        previous = self._runs.get(job_id)
        if previous is not None:
            # Our own lease came back to us while the job still runs here (renewals failed
            # past its expiry): it runs again, at least once as everywhere, and the ledger
            # keeps one outcome. The older run is tracked here until it ends.
            log.warning("running_again", job_id=job_id)
            self._displaced[previous[0]] = previous[1]
        self._runs[job_id] = (task, reserved)

    def forget(self, task: asyncio.Task[Attempt], job_id: str) -> tuple[Reserved, str | None]:
        """Stop tracking an ended job task; return its reservation and the cancel reason left
        for its job, if any (it belongs to this run only: never to the job's next attempt)."""
        displaced = self._displaced.pop(task, None)
        if displaced is not None:
            return displaced, self._reasons.pop(displaced.job_id, None)
        entry = self._runs.get(job_id)
        if entry is None or entry[0] is not task:  # its handler renamed the task: look it up
            job_id = next(key for key, (other, _) in self._runs.items() if other is task)
        reserved = self._runs.pop(job_id)[1]
        return reserved, self._reasons.pop(reserved.job_id, None)

    def cancel(self, job_id: str, reason: str, *, unless_done: bool = False) -> bool:
        """Cancel a running job, recording ``reason`` unless one is recorded already (a
        requested cancel stays one). False if the job does not run here (or, with
        ``unless_done``, its task has ended already)."""
        entry = self._runs.get(job_id)
        if entry is None or (unless_done and entry[0].done()):
            return False
        self._reasons.setdefault(job_id, reason)
        entry[0].cancel()
        return True

    def take_reason(self, job_id: str) -> str | None:
        """Why this job is being cancelled (None: nobody said), taken back."""
        return self._reasons.pop(job_id, None)

    def cancel_all(self, reason: str) -> list[asyncio.Task[Attempt]]:
        """Cancel every run, older runs included, each with ``reason`` unless one is recorded
        already; return their tasks."""
        left = [*self._runs.values(), *self._displaced.items()]
        for task, reserved in left:
            self._reasons.setdefault(reserved.job_id, reason)
            task.cancel()
        return [task for task, _ in left]
