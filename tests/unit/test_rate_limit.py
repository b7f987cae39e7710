"""TokenBucket under a fake clock: burst, refusal, refill, cap, and the long-run rate bound."""

from __future__ import annotations

import doctest
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.clock import FakeClock

from swarmd.policies import ratelimit
from swarmd.policies.ratelimit import TokenBucket


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(500.0)


def test_starts_full_gives_the_burst_then_refuses(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=1.0, burst=5, clock=clock)
    assert [bucket.try_take() for _ in range(6)] == [True] * 5 + [False]
    assert bucket.wait_time() == pytest.approx(1.0)


def test_refills_at_rate(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=4.0, burst=4, clock=clock)
    assert bucket.try_take(4)
    clock.advance(0.2)  # 0.8 tokens
    assert not bucket.try_take()
    assert bucket.wait_time() == pytest.approx(0.05)
    clock.advance(0.05)
    assert bucket.try_take()
    assert not bucket.try_take()
    clock.advance(0.5)  # 2 tokens
    assert bucket.try_take(2)
    assert not bucket.try_take()


def test_never_holds_more_than_burst(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=10.0, burst=3, clock=clock)
    clock.advance(3600.0)
    assert [bucket.try_take() for _ in range(4)] == [True, True, True, False]
    assert bucket.wait_time(3) == pytest.approx(0.3)


def test_wait_time_is_zero_when_tokens_are_there_and_takes_nothing(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=1.0, burst=2, clock=clock)
    assert bucket.wait_time(2) == 0.0
    assert bucket.wait_time(2) == 0.0
    assert bucket.try_take(2)
    assert bucket.wait_time(2) == pytest.approx(2.0)


def test_a_refused_take_takes_nothing(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=1.0, burst=3, clock=clock)
    assert bucket.try_take(2)
    assert not bucket.try_take(2)  # only 1 left
    assert bucket.try_take(1)


@pytest.mark.parametrize("rate", [3.0, 7.0, 0.3, 1e-3, 123.456])
def test_waiting_exactly_wait_time_is_enough(clock: FakeClock, rate: float) -> None:
    bucket = TokenBucket(rate=rate, burst=1, clock=clock)
    assert bucket.try_take()
    for _ in range(50):
        wait = bucket.wait_time()
        assert wait == pytest.approx(1 / rate)
        clock.advance(wait)
        assert bucket.try_take(), "a caller that waited wait_time() was refused"


def test_a_greedy_taker_gets_the_full_rate_in_the_long_run(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=2.0, burst=1, clock=clock)
    taken = 0
    for _ in range(400):  # 100 s in steps of 0.25 s
        clock.advance(0.25)
        taken += bucket.try_take()
    assert taken == 200


@given(
    rate=st.floats(0.01, 100.0),
    burst=st.integers(1, 10),
    steps=st.lists(st.tuples(st.floats(0.0, 2.0), st.integers(1, 10)), min_size=1, max_size=60),
)
def test_tokens_taken_in_any_interval_are_bounded_by_burst_plus_rate_times_length(
    rate: float, burst: int, steps: list[tuple[float, int]]
) -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=rate, burst=burst, clock=clock)
    taken: list[tuple[float, int]] = []
    for gap, wanted in steps:
        clock.advance(gap)
        n = min(wanted, burst)
        if bucket.try_take(n):
            taken.append((clock.now, n))
    for i, (t0, _) in enumerate(taken):
        total = 0
        for t1, n in taken[i:]:
            total += n
            assert total <= burst + rate * (t1 - t0) + 1e-6


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"rate": 0.0, "burst": 1}, "rate"),
        ({"rate": -1.0, "burst": 1}, "rate"),
        ({"rate": float("nan"), "burst": 1}, "rate"),
        ({"rate": float("inf"), "burst": 1}, "rate"),
        ({"rate": 1.0, "burst": 0}, "burst"),
    ],
)
def test_validation_errors_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field) as info:
        TokenBucket(**kwargs)
    assert getattr(info.value, "key", None) == field


@pytest.mark.parametrize("n", [0, -1, 4])
def test_n_outside_one_to_burst_is_refused(clock: FakeClock, n: int) -> None:
    bucket = TokenBucket(rate=1.0, burst=3, clock=clock)
    with pytest.raises(ValueError, match="burst"):
        bucket.try_take(n)
    with pytest.raises(ValueError, match="burst"):
        bucket.wait_time(n)


def test_module_examples() -> None:
    result = doctest.testmod(ratelimit)
    assert result.attempted > 0 and result.failed == 0
