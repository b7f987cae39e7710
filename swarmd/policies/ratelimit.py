"""A token bucket: at most ``burst`` jobs at once, ``rate`` jobs per second on average.

The bucket starts full. Tokens refill continuously at ``rate`` per second up to ``burst``;
taking ``n`` tokens needs ``n`` in the bucket. Time comes from the injected ``clock``, so the
bucket never sleeps: a caller that is refused asks :meth:`TokenBucket.wait_time` how long to
wait, waits on its own loop, and tries again::

    >>> now = [0.0]
    >>> bucket = TokenBucket(rate=2.0, burst=2, clock=lambda: now[0])
    >>> bucket.try_take(), bucket.try_take(), bucket.try_take()
    (True, True, False)
    >>> bucket.wait_time()
    0.5
    >>> now[0] = 0.5
    >>> bucket.try_take()
    True
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from swarmd.errors import ConfigError

#: Float slack when comparing token counts, so that waiting exactly ``wait_time()`` suffices
#: even when ``rate`` is not a power of two. A take within the slack leaves a tiny debt, so
#: the slack never grants tokens the rate did not pay for.
_EPSILON = 1e-9


class TokenBucket:
    """Rate limit of ``rate`` tokens per second with bursts of up to ``burst`` tokens."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if not (math.isfinite(rate) and rate > 0):
            raise ConfigError("rate", f"must be a finite number > 0, got {rate!r}")
        if burst < 1:
            raise ConfigError("burst", f"must be at least 1, got {burst}")
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()

    @property
    def rate(self) -> float:
        """Tokens added per second."""
        return self._rate

    @property
    def burst(self) -> int:
        """The bucket's capacity."""
        return self._burst

    def try_take(self, n: int = 1) -> bool:
        """Take ``n`` tokens if they are all there now; never blocks."""
        self._check(n)
        self._refill()
        if self._tokens + _EPSILON < n:
            return False
        self._tokens -= n
        return True

    def wait_time(self, n: int = 1) -> float:
        """Seconds until ``n`` tokens are available (0 if they are now); takes nothing."""
        self._check(n)
        self._refill()
        missing = n - self._tokens
        return 0.0 if missing <= _EPSILON else missing / self._rate

    def _check(self, n: int) -> None:
        if not 1 <= n <= self._burst:
            raise ValueError(f"n must be in [1, burst={self._burst}], got {n}")

    def _refill(self) -> None:
        now = self._clock()
        if now > self._updated:
            self._tokens = min(float(self._burst), self._tokens + (now - self._updated) * self._rate)
            self._updated = now
