"""CircuitBreaker: the state machine under a fake clock, transitions, ratio mode, one trial."""

from __future__ import annotations

from typing import Any

import pytest
from support.clock import FakeClock

from swarmd.policies.breaker import CircuitBreaker, CircuitState
from swarmd.telemetry.metrics import CIRCUIT_STATES

CLOSED, HALF_OPEN, OPEN = CircuitState.CLOSED, CircuitState.HALF_OPEN, CircuitState.OPEN
Transitions = list[tuple[CircuitState, CircuitState]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
def transitions() -> Transitions:
    return []


def make(clock: FakeClock, transitions: Transitions, **kwargs: Any) -> CircuitBreaker:
    kwargs.setdefault("failure_threshold", 3)
    kwargs.setdefault("cooldown", 10.0)
    return CircuitBreaker(clock=clock, on_transition=lambda old, new: transitions.append((old, new)), **kwargs)


def test_state_values_are_the_exported_metric_values() -> None:
    assert [CIRCUIT_STATES[s] for s in (CLOSED, HALF_OPEN, OPEN)] == [0, 1, 2]


def test_full_cycle_fires_each_transition_exactly_once(clock: FakeClock, transitions: Transitions) -> None:
    breaker = make(clock, transitions)
    assert breaker.state is CLOSED and breaker.allow() and breaker.retry_after() == 0.0

    for _ in range(3):
        breaker.record_failure()
    assert breaker.state is OPEN
    assert transitions == [(CLOSED, OPEN)]
    assert not breaker.allow()
    assert breaker.retry_after() == 10.0

    clock.advance(9.5)
    assert breaker.state is OPEN and not breaker.allow()
    assert breaker.retry_after() == pytest.approx(0.5)

    clock.advance(0.5)
    # Reading the state again and again reports the half-open transition only once.
    assert [breaker.state for _ in range(3)] == [HALF_OPEN] * 3
    assert breaker.retry_after() == 0.0
    assert transitions == [(CLOSED, OPEN), (OPEN, HALF_OPEN)]

    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is CLOSED
    assert transitions == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]
    assert breaker.allow() and breaker.allow()


def test_the_cooldown_is_noticed_by_allow_without_reading_state(clock: FakeClock, transitions: Transitions) -> None:
    breaker = make(clock, transitions, failure_threshold=1)
    breaker.record_failure()
    clock.advance(10.0)
    assert breaker.allow()
    assert transitions == [(CLOSED, OPEN), (OPEN, HALF_OPEN)]


def test_failed_trial_reopens_with_a_fresh_cooldown(clock: FakeClock, transitions: Transitions) -> None:
    breaker = make(clock, transitions, failure_threshold=1)
    breaker.record_failure()
    clock.advance(25.0)  # well past the first cooldown
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is OPEN
    assert breaker.retry_after() == 10.0  # counted from the trial's failure, not the first open
    assert not breaker.allow()
    clock.advance(9.9)
    assert breaker.state is OPEN
    clock.advance(0.1)
    assert breaker.state is HALF_OPEN
    assert transitions == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, OPEN), (OPEN, HALF_OPEN)]


def test_only_consecutive_failures_open_it(clock: FakeClock, transitions: Transitions) -> None:
    breaker = make(clock, transitions)
    for _ in range(5):
        breaker.record_failure()
        breaker.record_failure()
        breaker.record_success()
    assert breaker.state is CLOSED and transitions == []
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is OPEN


def test_closing_resets_the_failure_streak(clock: FakeClock, transitions: Transitions) -> None:
    breaker = make(clock, transitions)
    for _ in range(3):
        breaker.record_failure()
    clock.advance(10.0)
    assert breaker.allow()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is CLOSED  # two failures after closing, not five in a row


def test_half_open_lets_exactly_one_trial_through(clock: FakeClock, transitions: Transitions) -> None:
    breaker = make(clock, transitions, failure_threshold=1)
    breaker.record_failure()
    clock.advance(10.0)
    assert [breaker.allow() for _ in range(5)] == [True, False, False, False, False]
    assert breaker.state is HALF_OPEN


def test_released_trial_frees_the_slot(clock: FakeClock, transitions: Transitions) -> None:
    breaker = make(clock, transitions, failure_threshold=1)
    breaker.record_failure()
    clock.advance(10.0)
    assert breaker.allow()
    assert not breaker.allow()
    breaker.release_trial()  # the trial was cancelled: no verdict
    assert breaker.state is HALF_OPEN
    assert breaker.allow()
    assert not breaker.allow()
    assert transitions == [(CLOSED, OPEN), (OPEN, HALF_OPEN)]


def test_each_half_open_period_gets_its_own_trial(clock: FakeClock, transitions: Transitions) -> None:
    breaker = make(clock, transitions, failure_threshold=1)
    breaker.record_failure()
    clock.advance(10.0)
    assert breaker.allow()
    breaker.record_failure()  # trial failed: open again
    clock.advance(10.0)
    assert breaker.allow()  # a new trial, although the old one was never released


def test_results_arriving_while_open_are_ignored(clock: FakeClock, transitions: Transitions) -> None:
    breaker = make(clock, transitions, failure_threshold=1)
    breaker.record_failure()
    clock.advance(4.0)
    breaker.record_failure()  # a run started before it opened
    breaker.record_success()
    assert breaker.state is OPEN
    assert breaker.retry_after() == 6.0  # cooldown neither extended nor cut short
    assert transitions == [(CLOSED, OPEN)]


def test_ratio_mode_opens_on_failure_share_over_a_full_window(clock: FakeClock, transitions: Transitions) -> None:
    breaker = make(clock, transitions, failure_threshold=100, failure_ratio=0.5, window=10)
    # Alternating results: 50% failures, but the window is not full until 10 results.
    for i in range(9):
        if i % 2 == 0:
            breaker.record_failure()
        else:
            breaker.record_success()
    assert breaker.state is CLOSED  # 5 of 9 failed, but fewer than `window` results seen
    breaker.record_success()
    assert breaker.state is CLOSED  # a success never opens it, whatever the ratio
    breaker.record_failure()  # the last 10 now hold 5 failures: 0.5 >= 0.5
    assert breaker.state is OPEN
    assert transitions == [(CLOSED, OPEN)]


def test_ratio_mode_counts_only_the_last_window_results(clock: FakeClock, transitions: Transitions) -> None:
    breaker = make(clock, transitions, failure_threshold=100, failure_ratio=0.3, window=10)
    for _ in range(2):
        breaker.record_failure()
    for _ in range(8):
        breaker.record_success()
    assert breaker.state is CLOSED  # F F S S S S S S S S: 2 of 10
    breaker.record_failure()
    assert breaker.state is CLOSED  # the oldest F slid out: F S S S S S S S S F, still 2 of 10
    for _ in range(20):
        breaker.record_success()
    for _ in range(2):
        breaker.record_failure()
    assert breaker.state is CLOSED  # 2 of the last 10
    breaker.record_failure()
    assert breaker.state is OPEN  # 3 of the last 10


def test_ratio_mode_keeps_the_consecutive_threshold(clock: FakeClock, transitions: Transitions) -> None:
    breaker = make(clock, transitions, failure_threshold=3, failure_ratio=0.9, window=50)
    for _ in range(3):
        breaker.record_failure()
    assert breaker.state is OPEN


def test_ratio_window_restarts_after_closing(clock: FakeClock, transitions: Transitions) -> None:
    breaker = make(clock, transitions, failure_threshold=100, failure_ratio=0.5, window=4)
    for _ in range(4):
        breaker.record_failure()
    assert breaker.state is OPEN
    clock.advance(10.0)
    assert breaker.allow()
    breaker.record_success()
    for _ in range(3):
        breaker.record_failure()
    assert breaker.state is CLOSED  # only 3 results since closing: the window is not full


def test_zero_cooldown_half_opens_at_once(clock: FakeClock, transitions: Transitions) -> None:
    breaker = make(clock, transitions, failure_threshold=1, cooldown=0.0)
    breaker.record_failure()
    assert breaker.state is HALF_OPEN
    assert transitions == [(CLOSED, OPEN), (OPEN, HALF_OPEN)]


def test_works_without_a_transition_callback(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown=1.0, clock=clock)
    breaker.record_failure()
    clock.advance(1.0)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is CLOSED


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"failure_ratio": 0.0}, "failure_ratio"),
        ({"failure_ratio": 1.5}, "failure_ratio"),
        ({"failure_ratio": float("nan")}, "failure_ratio"),
        ({"window": 0}, "window"),
        ({"cooldown": -1.0}, "cooldown"),
        ({"cooldown": float("inf")}, "cooldown"),
    ],
)
def test_validation_errors_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field) as info:
        CircuitBreaker(**kwargs)
    assert getattr(info.value, "key", None) == field
