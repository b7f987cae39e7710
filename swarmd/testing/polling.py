"""Waiting for a condition with a deadline: the one polling loop of the tests and the bench.

What is waited for is always a condition (a ledger count, a readiness answer, a process exit)
looked at every ``step`` seconds until a deadline, never a fixed sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A condition waited for did not hold by its deadline: an expectation of the test or the
    bench that was not met. ``what`` names the condition, ``timeout`` the seconds waited."""

    def __init__(self, what: str, timeout: float) -> None:
        super().__init__(f"timed out after {timeout}s waiting for {what}")
        self.what = what
        self.timeout = timeout


def wait_until(predicate: Callable[[], T], *, timeout: float = 30.0, what: str = "condition", step: float = 0.02) -> T:
    """Call ``predicate`` every ``step`` seconds until it returns something truthy, and return
    that; raise `WaitTimeout` naming ``what`` once ``timeout`` seconds have passed without."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise WaitTimeout(what, timeout)
        time.sleep(step)
