"""Concurrency limits: how many jobs may run at once, fixed or adapted to the agent's health.

The dispatcher holds one :class:`ConcurrencyLimit`, reports every finished run with
``observe(latency, ok)`` and sizes its slots from the returned limit. A config reload calls
``set_bounds``. Neither class touches a clock or the event loop: they are driven by samples.

:class:`AimdLimit` is additive-increase / multiplicative-decrease, as TCP does it:

- **baseline**: the lowest latency among the last ``10 * window`` *successful* samples (a
  sliding minimum, O(1) amortised). Failed runs do not count, since a fast error would make
  every normal run look slow. Because the minimum slides, a latency rise that persists for ten
  windows becomes the new normal and the limit grows back.
- **decrease**: a failure, or a latency above ``latency_tolerance * baseline``, multiplies the
  limit by ``backoff_ratio`` (rounded down, at least -1). After a decrease, further bad
  samples do not decrease it again until ``window`` samples have passed, so a burst of
  failures that all started under the old limit costs one step, not a collapse to the minimum.
- **increase**: after ``limit`` consecutive good samples (about one full round of slots)
  the limit grows by 1. Any bad sample restarts the count.

The limit always stays within ``[minimum, maximum]``.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Protocol

from swarmd.errors import ConfigError

#: The baseline is the minimum over this many windows of successful samples.
BASELINE_WINDOWS = 10
#: Latencies below this (seconds) count as this, so a 0.0 reading cannot make a zero baseline.
_MIN_BASELINE = 1e-6


class ConcurrencyLimit(Protocol):
    """What the dispatcher needs from a limit."""

    @property
    def limit(self) -> int:
        """The number of jobs allowed to run at once, now."""
        ...

    def observe(self, latency: float, ok: bool) -> int:
        """Record one finished run (``latency`` in seconds); return the limit now in force."""
        ...

    def set_bounds(self, minimum: int, maximum: int) -> None:
        """Change the bounds live (config reload); the limit is clamped into them."""
        ...


def _check_bounds(minimum: int, maximum: int) -> None:
    if minimum < 1:
        raise ConfigError("minimum", f"must be at least 1, got {minimum}")
    if maximum < minimum:
        raise ConfigError("maximum", f"must be >= minimum ({minimum}), got {maximum}")


class FixedLimit:
    """A limit that never moves: always the configured maximum."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ConfigError("limit", f"must be at least 1, got {limit}")
        self._limit = limit

    @property
    def limit(self) -> int:
        """The fixed limit."""
        return self._limit

    def observe(self, latency: float, ok: bool) -> int:
        """Ignore the sample; return the fixed limit."""
        return self._limit

    def set_bounds(self, minimum: int, maximum: int) -> None:
        """Validate the bounds and fix the limit at ``maximum``."""
        _check_bounds(minimum, maximum)
        self._limit = maximum


class AimdLimit:
    """An additive-increase / multiplicative-decrease limit (see the module docstring).

    ``initial`` defaults to ``maximum``: it behaves like a fixed limit until the agent shows
    strain, then backs off.
    """

    def __init__(
        self,
        *,
        minimum: int,
        maximum: int,
        initial: int | None = None,
        backoff_ratio: float = 0.9,
        latency_tolerance: float = 2.0,
        window: int = 50,
    ) -> None:
        _check_bounds(minimum, maximum)
        if initial is not None and not minimum <= initial <= maximum:
            raise ConfigError("initial", f"must be in [{minimum}, {maximum}], got {initial}")
        if not 0.0 < backoff_ratio < 1.0:
            raise ConfigError("backoff_ratio", f"must be in (0, 1), got {backoff_ratio!r}")
        if not (math.isfinite(latency_tolerance) and latency_tolerance >= 1.0):
            raise ConfigError("latency_tolerance", f"must be a finite number >= 1, got {latency_tolerance!r}")
        if window < 1:
            raise ConfigError("window", f"must be at least 1, got {window}")
        self._minimum = minimum
        self._maximum = maximum
        self._limit = maximum if initial is None else initial
        self._backoff_ratio = backoff_ratio
        self._tolerance = latency_tolerance
        self._window = window
        self._good_streak = 0
        self._since_decrease = window  # the first bad sample may decrease at once
        self._seq = 0  # index of the next successful sample
        self._fastest: deque[tuple[int, float]] = deque()  # (seq, latency), latency increasing

    @property
    def limit(self) -> int:
        """The number of jobs allowed to run at once, now."""
        return self._limit

    @property
    def baseline(self) -> float | None:
        """The lowest recent successful latency, or None before the first success."""
        return self._fastest[0][1] if self._fastest else None

    def observe(self, latency: float, ok: bool) -> int:
        """Record one finished run (``latency`` in seconds); return the limit now in force."""
        if not (math.isfinite(latency) and latency >= 0):
            raise ValueError(f"latency must be a finite number >= 0, got {latency!r}")
        self._since_decrease += 1
        bad = not ok
        if ok:
            self._push_baseline(latency)
            bad = latency > self._tolerance * max(self._fastest[0][1], _MIN_BASELINE)
        if bad:
            self._good_streak = 0
            if self._since_decrease >= self._window:
                self._since_decrease = 0
                self._set(math.floor(self._limit * self._backoff_ratio))
        else:
            self._good_streak += 1
            if self._good_streak >= self._limit:
                self._good_streak = 0
                self._set(self._limit + 1)
        return self._limit

    def set_bounds(self, minimum: int, maximum: int) -> None:
        """Change the bounds live; the limit is clamped into them."""
        _check_bounds(minimum, maximum)
        self._minimum, self._maximum = minimum, maximum
        self._set(self._limit)

    def _set(self, limit: int) -> None:
        self._limit = max(self._minimum, min(self._maximum, limit))

    def _push_baseline(self, latency: float) -> None:
        # Sliding-window minimum: keep only samples that could still become the minimum.
        while self._fastest and self._fastest[-1][1] >= latency:
            self._fastest.pop()
        self._fastest.append((self._seq, latency))
        oldest_kept = self._seq - BASELINE_WINDOWS * self._window + 1
        while self._fastest[0][0] < oldest_kept:
            self._fastest.popleft()
        self._seq += 1
