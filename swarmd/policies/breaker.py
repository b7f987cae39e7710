"""A circuit breaker: stop sending work to an agent that keeps failing, then probe it.

::

    CLOSED --(failure_threshold consecutive failures, or failure ratio over window)--> OPEN
    OPEN --(cooldown elapsed; noticed on the next read of state / allow / retry_after)--> HALF_OPEN
    HALF_OPEN --(the one trial succeeds)--> CLOSED        (counters reset)
    HALF_OPEN --(the one trial fails)--> OPEN             (fresh cooldown)

The breaker only keeps the books; the caller asks :meth:`CircuitBreaker.allow` before running
a job and reports the result with :meth:`~CircuitBreaker.record_success`,
:meth:`~CircuitBreaker.record_failure` or, for a run that ended neither way (cancelled),
:meth:`~CircuitBreaker.release_trial`. Time comes from the injected ``clock`` and every
transition is reported once to ``on_transition(old, new)``.

Results that arrive while the breaker is OPEN (runs started before it opened) are ignored:
they neither extend the cooldown nor close it. In HALF_OPEN any recorded result decides,
whether or not it came from the trial run: it is fresh evidence either way.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from swarmd.errors import ConfigError
from swarmd.model import CircuitState

__all__ = ["CircuitBreaker", "CircuitState"]


class CircuitBreaker:
    """Per-agent circuit breaker.

    ``failure_threshold`` consecutive failures open it. With ``failure_ratio`` set, it also
    opens when, once at least ``window`` results have been seen, the share of failures among
    the last ``window`` results is ``>= failure_ratio``. It stays open for ``cooldown``
    seconds, then lets exactly one trial through.
    """

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        failure_ratio: float | None = None,
        window: int = 20,
        cooldown: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        on_transition: Callable[[CircuitState, CircuitState], None] | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ConfigError("failure_threshold", f"must be at least 1, got {failure_threshold}")
        if failure_ratio is not None and not 0.0 < failure_ratio <= 1.0:
            raise ConfigError("failure_ratio", f"must be in (0, 1], got {failure_ratio!r}")
        if window < 1:
            raise ConfigError("window", f"must be at least 1, got {window}")
        if not (math.isfinite(cooldown) and cooldown >= 0):
            raise ConfigError("cooldown", f"must be a finite number >= 0, got {cooldown!r}")
        self._failure_threshold = failure_threshold
        self._failure_ratio = failure_ratio
        self._cooldown = cooldown
        self._clock = clock
        self._on_transition = on_transition
        self._state = CircuitState.CLOSED
        self._opened_at = 0.0
        self._trial_taken = False
        self._consecutive_failures = 0
        self._recent: deque[bool] = deque(maxlen=window)  # True = failure
        self._recent_failures = 0

    @property
    def state(self) -> CircuitState:
        """The current state; an OPEN breaker whose cooldown has elapsed becomes HALF_OPEN."""
        if self._state is CircuitState.OPEN and self._clock() - self._opened_at >= self._cooldown:
            self._move_to(CircuitState.HALF_OPEN)
        return self._state

    def allow(self) -> bool:
        """Whether a job may run now. In HALF_OPEN, True for one trial until its result is in."""
        if self._state is CircuitState.CLOSED:  # per job: no cooldown to look at, no property call
            return True
        if self.state is CircuitState.HALF_OPEN and not self._trial_taken:
            self._trial_taken = True
            return True
        return False

    def record_success(self) -> None:
        """A run succeeded: closes a half-open breaker, breaks a closed one's failure streak."""
        if self._state is CircuitState.CLOSED:  # per job: no cooldown to look at, no property call
            self._consecutive_failures = 0
            self._remember(failed=False)
        elif self.state is CircuitState.HALF_OPEN:
            self._move_to(CircuitState.CLOSED)

    def record_failure(self) -> None:
        """A run failed: may open a closed breaker; reopens a half-open one."""
        state = self.state
        if state is CircuitState.HALF_OPEN:
            self._move_to(CircuitState.OPEN)
        elif state is CircuitState.CLOSED:
            self._consecutive_failures += 1
            self._remember(failed=True)
            if self._consecutive_failures >= self._failure_threshold or self._ratio_tripped():
                self._move_to(CircuitState.OPEN)

    def release_trial(self) -> None:
        """The half-open trial ended neither in success nor failure: let another one through."""
        self._trial_taken = False

    def retry_after(self) -> float:
        """Seconds until an open breaker half-opens; 0 when closed or half-open."""
        if self.state is not CircuitState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self._cooldown - self._clock())

    def _remember(self, *, failed: bool) -> None:
        if self._failure_ratio is None:
            return
        if len(self._recent) == self._recent.maxlen and self._recent[0]:
            self._recent_failures -= 1
        self._recent.append(failed)
        self._recent_failures += failed

    def _ratio_tripped(self) -> bool:
        if self._failure_ratio is None or len(self._recent) < (self._recent.maxlen or 0):
            return False
        return self._recent_failures / len(self._recent) >= self._failure_ratio

    def _move_to(self, new: CircuitState) -> None:
        old, self._state = self._state, new
        self._trial_taken = False
        if new is CircuitState.OPEN:
            self._opened_at = self._clock()
        # Each period in CLOSED starts from a clean slate.
        self._consecutive_failures = 0
        self._recent.clear()
        self._recent_failures = 0
        if self._on_transition is not None:
            self._on_transition(old, new)
