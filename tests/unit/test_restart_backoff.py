"""A dead worker is restarted after a backoff that doubles with each death in a row, up to a
cap, and is forgiven by a calm run (swarmd.policies.restarts)."""

from __future__ import annotations

import pytest

from swarmd.policies.restarts import RestartBackoff


def test_deaths_in_a_row_double_the_wait_up_to_the_cap() -> None:
    backoff = RestartBackoff(base=0.5, cap=4.0, calm=60.0)
    delays = [backoff.died(started=10.0 * n, now=10.0 * n + 1.0) for n in range(6)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.in_a_row == 6


def test_a_calm_run_starts_the_count_afresh() -> None:
    backoff = RestartBackoff(base=0.5, cap=30.0, calm=60.0)
    assert [backoff.died(started=0.0, now=1.0) for _ in range(3)] == [0.5, 1.0, 2.0]
    assert backoff.died(started=100.0, now=160.0) == 0.5  # ran 60 s: calm
    assert backoff.died(started=160.0, now=161.0) == 1.0


def test_a_long_crash_loop_never_overflows() -> None:
    backoff = RestartBackoff(base=0.5, cap=30.0, calm=60.0)
    for _ in range(10_000):
        delay = backoff.died(started=0.0, now=0.0)
    assert delay == 30.0


@pytest.mark.parametrize(("base", "cap", "calm"), [(0.0, 1.0, 1.0), (2.0, 1.0, 1.0), (0.5, 1.0, -1.0)])
def test_nonsense_settings_are_refused(base: float, cap: float, calm: float) -> None:
    with pytest.raises(ValueError, match="restart backoff"):
        RestartBackoff(base=base, cap=cap, calm=calm)
