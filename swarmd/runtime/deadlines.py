"""Job timeouts at scale: one loop timer per distinct timeout, not one per job.

Jobs with the same timeout reach their deadlines in the order they started, so a FIFO per
duration is already sorted by deadline: starting and cancelling a timeout are O(1), and only
the head of each FIFO needs a loop timer. With 100,000 jobs in flight this saves a
`TimerHandle` each (about 700 bytes on uvloop). A cancelled timeout is dropped lazily: its
entry stays in the FIFO until it reaches the head or the FIFO is compacted, which happens once
dead entries outnumber live ones.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Final

#: Compact a FIFO once it holds this many entries and more than twice its live ones.
_COMPACT_AT: Final = 1024


class Deadlines:
    """Calls ``expire(job_id)`` when a started timeout runs out before it is cancelled."""

    def __init__(self, expire: Callable[[str], None], loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._expire = expire
        self._loop = loop
        #: One entry per started timeout, ``(deadline, job_id, duration)``: the same tuple in its
        #: FIFO and in ``_deadline``, so that a FIFO entry is live exactly while it is the job's.
        self._fifos: dict[float, deque[tuple[float, str, float]]] = {}
        self._live: dict[float, int] = {}
        self._timers: dict[float, asyncio.TimerHandle] = {}
        #: job id -> the entry of its live timeout.
        self._deadline: dict[str, tuple[float, str, float]] = {}

    def __len__(self) -> int:
        return len(self._deadline)

    def start(self, job_id: str, seconds: float) -> None:
        """Start (or restart) the timeout of ``job_id``."""
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        if job_id in self._deadline:
            self.cancel(job_id)
        deadline = loop.time() + seconds
        fifo = self._fifos.get(seconds)
        if fifo is None:
            fifo = self._fifos[seconds] = deque()
            self._live[seconds] = 0
        entry = (deadline, job_id, seconds)
        fifo.append(entry)
        self._live[seconds] += 1
        self._deadline[job_id] = entry
        if seconds not in self._timers:
            self._timers[seconds] = loop.call_at(deadline, self._fire, seconds)

    def cancel(self, job_id: str) -> None:
        """The job ended: its timeout will not fire."""
        entry = self._deadline.pop(job_id, None)
        if entry is None:
            return
        seconds = entry[2]
        self._live[seconds] -= 1
        fifo = self._fifos[seconds]
        if len(fifo) >= _COMPACT_AT and len(fifo) > 2 * self._live[seconds]:
            self._fifos[seconds] = deque(item for item in fifo if self._deadline.get(item[1]) is item)

    def _fire(self, seconds: float) -> None:
        assert self._loop is not None
        now = self._loop.time()
        fifo = self._fifos[seconds]
        expired: list[str] = []
        while fifo and fifo[0][0] <= now:
            entry = fifo.popleft()
            job_id = entry[1]
            if self._deadline.get(job_id) is entry:
                del self._deadline[job_id]
                self._live[seconds] -= 1
                expired.append(job_id)
        while fifo and self._deadline.get(fifo[0][1]) is not fifo[0]:
            fifo.popleft()  # cancelled: nothing to wait for
        if fifo:
            self._timers[seconds] = self._loop.call_at(fifo[0][0], self._fire, seconds)
        else:
            del self._timers[seconds], self._fifos[seconds], self._live[seconds]
        for job_id in expired:
            self._expire(job_id)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._fifos.clear()
        self._live.clear()
        self._deadline.clear()
