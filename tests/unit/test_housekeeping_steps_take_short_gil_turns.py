"""While a housekeeping step runs, the switch interval is short; after the last step it is back.

A step's statements each take the GIL back from a busy event loop, which waits the switch
interval (`swarmd.storage.gil_turns`). Steps of several backends may overlap: the interval is
restored only when the last one ends, to what it was before the first began.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from swarmd.storage.gil_turns import STEP_SWITCH_INTERVAL, short_gil_turns

DAEMON_INTERVAL = 0.0005


@pytest.fixture(autouse=True)
def daemon_interval() -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(DAEMON_INTERVAL)
    yield
    sys.setswitchinterval(before)


def test_a_step_runs_with_short_turns_and_restores_the_interval() -> None:
    with short_gil_turns():
        assert sys.getswitchinterval() == pytest.approx(STEP_SWITCH_INTERVAL)
    assert sys.getswitchinterval() == pytest.approx(DAEMON_INTERVAL)


def test_overlapping_steps_restore_the_interval_only_when_the_last_ends() -> None:
    first = short_gil_turns()
    second = short_gil_turns()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert sys.getswitchinterval() == pytest.approx(STEP_SWITCH_INTERVAL), "restored while a step still ran"
    second.__exit__(None, None, None)
    assert sys.getswitchinterval() == pytest.approx(DAEMON_INTERVAL)


def test_a_step_that_fails_restores_the_interval() -> None:
    with pytest.raises(RuntimeError), short_gil_turns():
        raise RuntimeError("the step failed")
    assert sys.getswitchinterval() == pytest.approx(DAEMON_INTERVAL)


def test_an_interval_already_shorter_is_left_alone() -> None:
    sys.setswitchinterval(STEP_SWITCH_INTERVAL / 2)
    with short_gil_turns():
        assert sys.getswitchinterval() == pytest.approx(STEP_SWITCH_INTERVAL / 2)
