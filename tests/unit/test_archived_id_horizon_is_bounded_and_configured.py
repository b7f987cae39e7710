"""The horizon of archived job ids: the ``archived_id_ttl`` setting and the generations.

An id is remembered for at least the horizon and at most the horizon plus one grain and an
hour; about nine generations are live at once, whatever the horizon; the setting defaults to
``result_ttl`` and is never shorter than a late outcome can come (lease + longest timeout).
"""

from __future__ import annotations

import math

import pytest

from swarmd.config import AgentSettings, Settings, archived_id_ttl_seconds, check
from swarmd.errors import ConfigError
from swarmd.storage.horizon import DEFAULT_HORIZON, UNIT, expires_at, first_dead, generation, grain_hours, is_live


@pytest.mark.parametrize("horizon", [600.0, 3600.0, 86400.0, 7 * 86400.0, 365 * 86400.0])
@pytest.mark.parametrize("archived_at", [1_780_000_000.0, 1_780_001_234.567, 1_780_003_599.999])
def test_an_id_is_remembered_for_the_horizon_and_at_most_a_grain_and_an_hour_more(
    horizon: float, archived_at: float
) -> None:
    gen = generation(archived_at, horizon)
    assert is_live(gen, archived_at) and is_live(gen, archived_at + horizon - 0.001)
    assert expires_at(gen) >= archived_at + horizon
    assert expires_at(gen) <= archived_at + horizon + (grain_hours(horizon) + 1) * UNIT
    assert not is_live(gen, expires_at(gen)) and gen == first_dead(expires_at(gen))


@pytest.mark.parametrize("horizon", [600.0, 86400.0, 7 * 86400.0, 365 * 86400.0])
def test_about_nine_generations_are_live_at_once(horizon: float) -> None:
    """Archiving every minute for two horizons: the live generations at the end (those a lookup
    probes) number at most the horizon over the grain, plus 2: 10 at most, whatever the horizon."""
    start = 1_780_000_000.0
    gens = [generation(start + minute * 60, horizon) for minute in range(int(2 * horizon / 60) + 1)]
    now = start + 2 * horizon
    live = {gen for gen in gens if is_live(gen, now)}
    assert 1 <= len(live) <= math.ceil(horizon / (grain_hours(horizon) * UNIT)) + 2 <= 10
    assert all(gen < 2**23 for gen in gens)  # a 3-byte integer in an SQLite record


def test_the_setting_defaults_to_result_ttl_but_never_below_a_late_outcome() -> None:
    assert archived_id_ttl_seconds(Settings()) == DEFAULT_HORIZON == 7 * 86400.0
    assert archived_id_ttl_seconds(Settings(result_ttl="2w")) == 14 * 86400.0
    # A short result_ttl: the default still covers lease + the longest handler timeout.
    assert archived_id_ttl_seconds(Settings(result_ttl="60s", lease_seconds=30, default_timeout=300)) == 330.0
    slow = Settings(result_ttl="60s", agent={"slow": AgentSettings(timeout=3600)})
    assert archived_id_ttl_seconds(slow) == 30.0 + 3600.0
    assert archived_id_ttl_seconds(Settings(archived_id_ttl="30d")) == 30 * 86400.0


def test_a_horizon_shorter_than_a_late_outcome_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="archived_id_ttl: '5m' is shorter than lease_seconds plus") as refused:
        check(Settings(archived_id_ttl="5m", lease_seconds=30, default_timeout=300))
    assert refused.value.key == "archived_id_ttl"
    check(Settings(archived_id_ttl="330s", lease_seconds=30, default_timeout=300))
