"""AimdLimit and FixedLimit: response to latency steps and failures, bounds, live reload."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmd.policies.concurrency import BASELINE_WINDOWS, AimdLimit, ConcurrencyLimit, FixedLimit

FAST, SLOW = 0.010, 0.050  # a 5x latency step


def feed(limit: AimdLimit, latency: float, n: int, ok: bool = True) -> list[int]:
    return [limit.observe(latency, ok) for _ in range(n)]


def test_steady_low_latency_grows_to_the_maximum_one_step_per_round() -> None:
    aimd = AimdLimit(minimum=2, maximum=20, initial=2, window=5)
    seen = feed(aimd, FAST, 400)
    assert seen[-1] == 20
    assert all(b - a in (0, 1) for a, b in itertools.pairwise(seen))
    # Additive increase: the limit L is held for L good samples before it becomes L + 1.
    assert seen[:2] == [2, 3] and seen.count(3) == 3 and seen.count(10) == 10
    assert seen.index(20) == sum(range(2, 20)) - 1


def test_a_latency_step_drives_the_limit_down_to_the_minimum_and_back_up() -> None:
    aimd = AimdLimit(minimum=2, maximum=20, initial=20, backoff_ratio=0.5, window=5)
    feed(aimd, FAST, 50)
    assert aimd.limit == 20

    during = feed(aimd, SLOW, 20)
    assert during[0] == 10  # the first slow sample already halves it
    assert min(during) == 2 and during[-1] == 2  # falls to the minimum, never below
    assert all(b <= a for a, b in itertools.pairwise(during))

    after = feed(aimd, FAST, 300)
    assert after[-1] == 20
    assert all(b >= a for a, b in itertools.pairwise(after))


def test_decreases_are_spaced_by_window_samples() -> None:
    aimd = AimdLimit(minimum=1, maximum=100, initial=100, backoff_ratio=0.9, window=10)
    seen = feed(aimd, FAST, 30, ok=False)
    # A burst of 30 failures costs 3 multiplicative steps, not 30.
    assert seen[0] == 90 and seen[9] == 90 and seen[10] == 81 and seen[20] == 72
    assert seen[-1] == 72


def test_a_bad_sample_restarts_the_count_towards_an_increase() -> None:
    aimd = AimdLimit(minimum=1, maximum=10, initial=4, window=1000)
    assert aimd.observe(FAST, False) == 3  # decreases; the next 999 samples cannot
    assert feed(aimd, FAST, 2) == [3, 3]
    assert aimd.observe(FAST, False) == 3
    assert feed(aimd, FAST, 3) == [3, 3, 4]  # 3 good in a row after the failure, not 5 in all


def test_failures_decrease_the_limit_even_when_fast() -> None:
    aimd = AimdLimit(minimum=1, maximum=10, initial=10, window=1)
    assert feed(aimd, FAST, 3, ok=False) == [9, 8, 7]


def test_latency_within_tolerance_is_not_a_strain() -> None:
    aimd = AimdLimit(minimum=1, maximum=10, initial=10, latency_tolerance=2.0, window=1)
    aimd.observe(FAST, True)
    assert aimd.observe(2 * FAST, True) == 10
    assert aimd.observe(2.01 * FAST, True) == 9


def test_failed_runs_do_not_lower_the_baseline() -> None:
    aimd = AimdLimit(minimum=1, maximum=10, initial=10, window=1)
    aimd.observe(FAST, True)
    aimd.observe(0.0001, False)  # a fast error
    assert aimd.baseline == FAST
    assert aimd.observe(FAST, True) == 9  # only the failure counted against it


def test_a_persistent_step_becomes_the_new_baseline() -> None:
    window = 5
    aimd = AimdLimit(minimum=1, maximum=30, initial=30, backoff_ratio=0.5, window=window)
    feed(aimd, FAST, 10)
    feed(aimd, SLOW, BASELINE_WINDOWS * window - 1)
    assert aimd.baseline == FAST  # one fast sample still in the long window
    feed(aimd, SLOW, 1)
    assert aimd.baseline == SLOW
    low = aimd.limit
    feed(aimd, SLOW, 100)
    assert aimd.limit > low  # slow is the new normal: it grows again


def test_zero_latency_readings_do_not_make_everything_slow() -> None:
    aimd = AimdLimit(minimum=1, maximum=10, initial=10, window=1)
    feed(aimd, 0.0, 5)
    assert aimd.observe(1.5e-6, True) == 10  # below the 1 us floor times the tolerance


def test_initial_defaults_to_the_maximum() -> None:
    assert AimdLimit(minimum=1, maximum=64).limit == 64


def test_set_bounds_clamps_the_limit_live() -> None:
    aimd = AimdLimit(minimum=1, maximum=20, initial=20)
    aimd.set_bounds(1, 8)
    assert aimd.limit == 8
    aimd.set_bounds(10, 30)
    assert aimd.limit == 10
    feed(aimd, FAST, 1000)
    assert aimd.limit == 30
    with pytest.raises(ValueError, match="maximum"):
        aimd.set_bounds(5, 4)
    assert aimd.limit == 30


def test_bad_latency_is_refused() -> None:
    aimd = AimdLimit(minimum=1, maximum=2)
    for latency in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="latency"):
            aimd.observe(latency, True)


samples = st.tuples(st.floats(0.0, 1e4), st.booleans())
bounds = st.tuples(st.integers(1, 50), st.integers(0, 50)).map(lambda t: (t[0], t[0] + t[1]))


@given(
    initial_bounds=bounds,
    params=st.fixed_dictionaries(
        {
            "backoff_ratio": st.floats(0.01, 0.99),
            "latency_tolerance": st.floats(1.0, 10.0),
            "window": st.integers(1, 20),
        }
    ),
    ops=st.lists(st.one_of(samples, bounds.map(lambda b: ("bounds", b))), max_size=300),
)
def test_any_sequence_of_samples_keeps_the_limit_within_bounds(
    initial_bounds: tuple[int, int], params: dict[str, Any], ops: list[Any]
) -> None:
    lo, hi = initial_bounds
    aimd = AimdLimit(minimum=lo, maximum=hi, **params)
    for op in ops:
        if op[0] == "bounds":
            lo, hi = op[1]
            aimd.set_bounds(lo, hi)
            result = aimd.limit
        else:
            result = aimd.observe(*op)
        assert result == aimd.limit
        assert lo <= aimd.limit <= hi


def test_fixed_limit_never_moves_until_reloaded() -> None:
    fixed = FixedLimit(8)
    assert fixed.limit == 8
    assert [fixed.observe(9.0, False), fixed.observe(0.001, True)] == [8, 8]
    fixed.set_bounds(1, 12)
    assert fixed.limit == 12 and fixed.observe(9.0, False) == 12
    with pytest.raises(ValueError, match="minimum"):
        fixed.set_bounds(0, 3)


def test_both_satisfy_the_protocol() -> None:
    limits: list[ConcurrencyLimit] = [FixedLimit(4), AimdLimit(minimum=1, maximum=4)]
    for limit in limits:
        limit.set_bounds(2, 3)
        assert limit.observe(0.01, True) == limit.limit == 3


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"minimum": 0, "maximum": 4}, "minimum"),
        ({"minimum": 5, "maximum": 4}, "maximum"),
        ({"minimum": 1, "maximum": 4, "initial": 5}, "initial"),
        ({"minimum": 2, "maximum": 4, "initial": 1}, "initial"),
        ({"minimum": 1, "maximum": 4, "backoff_ratio": 1.0}, "backoff_ratio"),
        ({"minimum": 1, "maximum": 4, "backoff_ratio": 0.0}, "backoff_ratio"),
        ({"minimum": 1, "maximum": 4, "latency_tolerance": 0.5}, "latency_tolerance"),
        ({"minimum": 1, "maximum": 4, "latency_tolerance": float("nan")}, "latency_tolerance"),
        ({"minimum": 1, "maximum": 4, "window": 0}, "window"),
    ],
)
def test_validation_errors_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field) as info:
        AimdLimit(**kwargs)
    assert getattr(info.value, "key", None) == field


def test_fixed_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="limit") as info:
        FixedLimit(0)
    assert getattr(info.value, "key", None) == "limit"
