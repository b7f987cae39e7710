"""RetryPolicy: bounds of the jittered delay, reproducibility, validation."""

from __future__ import annotations

import dataclasses
import doctest
import random
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmd.policies import backoff
from swarmd.policies.backoff import RetryPolicy

positive = st.floats(min_value=0.0, max_value=1e6, exclude_min=True, allow_subnormal=True)


@st.composite
def policies(draw: st.DrawFn) -> RetryPolicy:
    base = draw(positive)
    cap = draw(st.floats(min_value=base, max_value=1e300))
    return RetryPolicy(max_attempts=draw(st.integers(1, 100)), base=base, cap=cap)


@given(policy=policies(), retry=st.integers(0, 10_000), seed=st.integers(0, 2**32))
def test_every_delay_lies_in_zero_to_min_cap_base_times_two_to_the_retry(
    policy: RetryPolicy, retry: int, seed: int
) -> None:
    # Exact arithmetic for the oracle: base * 2**retry does not fit a float for large retry.
    bound = min(Fraction(policy.cap), Fraction(policy.base) * 2**retry)
    assert Fraction(policy.ceiling(retry)) == bound
    delay = policy.delay(retry, random.Random(seed))
    assert 0 <= Fraction(delay) <= bound


def test_huge_retry_numbers_give_the_cap_without_overflow() -> None:
    policy = RetryPolicy(base=1e-300, cap=1e300)
    assert policy.ceiling(10**6) == 1e300
    assert policy.ceiling(2**80) == 1e300
    assert 0.0 <= policy.delay(10**6, random.Random(0)) <= 1e300
    # Below the cap, although 2.0**1500 alone would not fit in a float.
    assert Fraction(policy.ceiling(1500)) == Fraction(1e-300) * 2**1500
    tiny = RetryPolicy(base=5e-324, cap=1e300)
    assert Fraction(tiny.ceiling(1100)) == Fraction(5e-324) * 2**1100


def test_ceiling_doubles_from_base_until_the_cap() -> None:
    policy = RetryPolicy(base=0.5, cap=10.0)
    assert [policy.ceiling(r) for r in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_delays_are_jittered_over_the_whole_interval() -> None:
    policy = RetryPolicy(base=1.0, cap=100.0)
    rng = random.Random(1)
    delays = [policy.delay(3, rng) for _ in range(2000)]
    assert min(delays) < 0.5  # full jitter reaches near zero...
    assert max(delays) > 7.5  # ...and near the ceiling of 8
    assert len(set(delays)) == len(delays)


def test_a_seeded_rng_gives_reproducible_delays() -> None:
    policy = RetryPolicy(base=0.5, cap=60.0)
    first = [policy.delay(r, random.Random(42)) for r in range(10)]
    again = [policy.delay(r, random.Random(42)) for r in range(10)]
    other = [policy.delay(r, random.Random(43)) for r in range(10)]
    assert first == again
    assert first != other
    rng_a, rng_b = random.Random(7), random.Random(7)
    assert [policy.delay(r, rng_a) for r in range(20)] == [policy.delay(r, rng_b) for r in range(20)]


@pytest.mark.parametrize(
    ("max_attempts", "expected"),
    [(1, [False, False]), (3, [True, True, False, False])],
)
def test_should_retry_while_attempts_remain(max_attempts: int, expected: list[bool]) -> None:
    policy = RetryPolicy(max_attempts=max_attempts)
    assert [policy.should_retry(a) for a in range(1, len(expected) + 1)] == expected


def test_should_retry_rejects_a_zero_based_attempt() -> None:
    with pytest.raises(ValueError, match="attempt"):
        RetryPolicy().should_retry(0)


def test_negative_retry_is_refused() -> None:
    with pytest.raises(ValueError, match="retry"):
        RetryPolicy().delay(-1, random.Random(0))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": -3}, "max_attempts"),
        ({"base": 0.0}, "base"),
        ({"base": -1.0}, "base"),
        ({"base": float("nan")}, "base"),
        ({"base": float("inf"), "cap": float("inf")}, "base"),
        ({"base": 2.0, "cap": 1.0}, "cap"),
        ({"cap": float("inf")}, "cap"),
        ({"cap": float("nan")}, "cap"),
    ],
)
def test_validation_errors_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field) as info:
        RetryPolicy(**kwargs)
    assert getattr(info.value, "key", None) == field


def test_defaults_and_per_job_override() -> None:
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.base, policy.cap) == (3, 0.5, 60.0)
    per_job = dataclasses.replace(policy, max_attempts=5)
    assert per_job.should_retry(4) and not policy.should_retry(4)
    with pytest.raises(ValueError, match="max_attempts"):
        dataclasses.replace(policy, max_attempts=0)


def test_module_examples() -> None:
    result = doctest.testmod(backoff)
    assert result.attempted > 0 and result.failed == 0
