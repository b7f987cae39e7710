"""The jobs running in one worker, and why any of them is being cancelled.

One owner for that state: the worker adds a run when it starts a job task and forgets it when
the task ends; the worker (a cancel request, the drain) and the job runner (a timeout) cancel
runs with a reason, recorded before the task is cancelled; the runner takes the reason back
when the handler ends, to tell a cancel on purpose from one nobody asked for.

A handler that swallows its cancellation is not waited for: ABANDON_AFTER seconds after a
cancel, a run still going is handed to ``on_stuck`` (the worker records its attempt as the
cancel said and frees its slot) and *abandoned*: kept in a set of its own (a strong reference,
counted by ``swarmd_abandoned_tasks``) and never awaited again. If it ever ends, `forget` says
so and its late result is dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

import structlog

from swarmd.queue.base import Reserved

if TYPE_CHECKING:
    from swarmd.runtime.execution import Attempt

log = structlog.get_logger("swarmd.worker")

#: Seconds a cancelled handler has to stop before its task is abandoned.
ABANDON_AFTER: Final = 1.0


class RunningJobs:
    """Job id -> its running task and reservation, plus older runs of jobs reserved again while
    they ran, and the cancel reason of each job being cancelled."""

    __slots__ = ("_abandoned", "_displaced", "_reasons", "_runs", "abandon_after", "on_stuck")

    def __init__(self, *, abandon_after: float = ABANDON_AFTER) -> None:
        self._runs: dict[str, tuple[asyncio.Task[Attempt], Reserved]] = {}
        #: Older runs of jobs reserved again while they ran here (see `add`), until they end.
        self._displaced: dict[asyncio.Task[Attempt], Reserved] = {}
        #: Job id -> why it is being cancelled (set before Task.cancel()).
        self._reasons: dict[str, str] = {}
        #: Tasks given up on (their handler ignored its cancel): held, never awaited.
        self._abandoned: set[asyncio.Task[Attempt]] = set()
        self.abandon_after = abandon_after
        #: Called with (task, job id) for a run still going ``abandon_after`` s after its cancel.
        self.on_stuck: Callable[[asyncio.Task[Attempt], str], None] | None = None

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

    @property
    def abandoned(self) -> int:
        """How many abandoned tasks still run."""
        return len(self._abandoned)

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

    def forget(self, task: asyncio.Task[Attempt], job_id: str) -> tuple[Reserved, str | None] | None:
        """Stop tracking an ended job task; return its reservation and the cancel reason left
        for its job, if any (it belongs to this run only: never to the job's next attempt).
        None: the task had been abandoned (its attempt is recorded already)."""
        displaced = self._displaced.pop(task, None)
        if displaced is not None:
            return displaced, self._reasons.pop(displaced.job_id, None)
        entry = self._runs.get(job_id)
        if entry is None or entry[0] is not task:
            if task in self._abandoned:
                self._abandoned.discard(task)
                return None
            # its handler renamed the task: look it up
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
        self._watch(entry[0], job_id)
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
            self._watch(task, reserved.job_id)
        return [task for task, _ in left]

    def tasks(self) -> list[tuple[asyncio.Task[Attempt], str]]:
        """Every run tracked here, older runs included: (task, job id)."""
        return [(task, job_id) for job_id, (task, _) in self._runs.items()] + [
            (task, reserved.job_id) for task, reserved in self._displaced.items()
        ]

    def displaced_runs(self) -> list[Reserved]:
        """The reservations of older runs still running (see `add`)."""
        return list(self._displaced.values())

    def holds(self, task: asyncio.Task[Attempt], job_id: str) -> bool:
        """Whether ``task`` is a run tracked here (not ended, not abandoned)."""
        entry = self._runs.get(job_id)
        return (entry is not None and entry[0] is task) or task in self._displaced

    def abandon(self, task: asyncio.Task[Attempt], job_id: str) -> tuple[Reserved, str | None] | None:
        """Stop tracking a run that ignores its cancel; keep its task among the abandoned.
        Returns its reservation and cancel reason (None: not tracked here any more)."""
        reserved = self._displaced.pop(task, None)
        if reserved is None:
            entry = self._runs.get(job_id)
            if entry is None or entry[0] is not task:
                return None
            reserved = self._runs.pop(job_id)[1]
        self._abandoned.add(task)
        return reserved, self._reasons.pop(reserved.job_id, None)

    def _watch(self, task: asyncio.Task[Attempt], job_id: str) -> None:
        """Check, ``abandon_after`` seconds from now, that the cancelled run has ended."""
        if self.on_stuck is not None and not task.done():
            task.get_loop().call_later(self.abandon_after, self._check_stuck, task, job_id)

    def _check_stuck(self, task: asyncio.Task[Attempt], job_id: str) -> None:
        if not task.done() and self.on_stuck is not None and self.holds(task, job_id):
            self.on_stuck(task, job_id)
