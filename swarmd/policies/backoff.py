"""Retry policy: how many attempts a job gets and how long to wait between them.

Delays use exponential backoff with *full jitter*: the wait before retry ``r`` (``r = 0`` for
the first retry, after attempt 1 failed) is drawn uniformly from
``[0, min(cap, base * 2**r)]``. Spreading retries over the whole interval keeps a burst of
failures from coming back as a burst of retries.

The random source is passed in, so a seeded :class:`random.Random` gives the same delays
every time::

    >>> policy = RetryPolicy(max_attempts=3, base=0.5, cap=60.0)
    >>> policy.should_retry(attempt=1), policy.should_retry(attempt=3)
    (True, False)
    >>> policy.ceiling(0), policy.ceiling(4), policy.ceiling(10_000)
    (0.5, 8.0, 60.0)
    >>> 0.0 <= policy.delay(4, random.Random(7)) <= 8.0
    True

A policy is an immutable value: a per-job override is ``dataclasses.replace(policy,
max_attempts=n)``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from swarmd.errors import ConfigError


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempts and backoff for one agent (or one job).

    ``max_attempts`` counts every run, the first included (1 means never retry); ``base`` is
    the ceiling of the first retry's delay and ``cap`` the largest ceiling, both in seconds.
    A bad value raises :class:`~swarmd.errors.ConfigError` (a ``ValueError``) whose ``key``
    names the field.
    """

    max_attempts: int = 3
    base: float = 0.5
    cap: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError("max_attempts", f"must be at least 1, got {self.max_attempts!r}")
        if not (math.isfinite(self.base) and self.base > 0):
            raise ConfigError("base", f"must be a finite number > 0, got {self.base!r}")
        if not (math.isfinite(self.cap) and self.cap >= self.base):
            raise ConfigError("cap", f"must be a finite number >= base ({self.base!r}), got {self.cap!r}")

    def ceiling(self, retry: int) -> float:
        """The largest delay retry ``retry`` (0-based) may get: ``min(cap, base * 2**retry)``.

        Computed without ever forming ``2**retry``, so a huge ``retry`` simply gives ``cap``.
        """
        if retry < 0:
            raise ValueError(f"retry must be >= 0, got {retry}")
        # base = mb * 2**eb and cap = mc * 2**ec with mb, mc in [0.5, 1). Once retry > ec - eb,
        # base * 2**retry >= 2 * 2**ec > cap; below that, ldexp is exact and cannot overflow.
        _, cap_exp = math.frexp(self.cap)
        _, base_exp = math.frexp(self.base)
        if retry > cap_exp - base_exp:
            return self.cap
        return min(self.cap, math.ldexp(self.base, retry))

    def delay(self, retry: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``retry`` (0 for the first retry).

        Uniform in ``[0, ceiling(retry)]``, drawn from ``rng``.
        """
        return rng.uniform(0.0, self.ceiling(retry))

    def should_retry(self, attempt: int) -> bool:
        """Whether the job gets another run after attempt ``attempt`` (1-based) failed."""
        if attempt < 1:
            raise ValueError(f"attempt is 1-based, got {attempt}")
        return attempt < self.max_attempts
