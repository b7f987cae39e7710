"""When to restart a worker process that died: exponential backoff, forgiven after a calm run.

A worker that dies is restarted after ``base * 2**(deaths in a row - 1)`` seconds, at most
``cap``; a worker that ran ``calm`` seconds before it died starts the count afresh, so that one
crash a day costs ``base`` seconds while a crash loop settles at one start every ``cap``
seconds instead of restarting hot. Pure: the caller passes the times (monotonic seconds)::

    >>> backoff = RestartBackoff(base=0.5, cap=30.0, calm=60.0)
    >>> [backoff.died(started=0.0, now=1.0) for _ in range(4)]
    [0.5, 1.0, 2.0, 4.0]
    >>> backoff.died(started=0.0, now=100.0)  # it had run 100 s: a new count
    0.5
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

#: Seconds before the first restart, the longest wait, and the run that forgives past deaths.
RESTART_BASE: Final = 0.5
RESTART_CAP: Final = 30.0
RESTART_CALM: Final = 60.0


@dataclass(slots=True)
class RestartBackoff:
    """The restart delays of one worker slot."""

    base: float = RESTART_BASE
    cap: float = RESTART_CAP
    calm: float = RESTART_CALM
    #: Deaths in a row, each after a run shorter than ``calm``.
    in_a_row: int = field(default=0)

    def __post_init__(self) -> None:
        if not (0 < self.base <= self.cap) or self.calm < 0:
            raise ValueError(f"restart backoff needs 0 < base <= cap and calm >= 0, not {self!r}")

    def died(self, *, started: float, now: float) -> float:
        """A worker started at ``started`` died at ``now``: seconds to wait before the next start."""
        if now - started >= self.calm:
            self.in_a_row = 0
        self.in_a_row += 1
        return min(self.cap, self.base * 2.0 ** min(self.in_a_row - 1, 60))
