"""``workers`` (``--workers N|auto``, ``SWARMD_WORKERS``): a count from 1 to MAX_WORKERS, or
"auto" for the CPUs this process may use; anything else is refused, naming the key."""

from __future__ import annotations

import os

import pytest

from swarmd.cli.parser import build_parser
from swarmd.config import MAX_WORKERS, load_settings, worker_count
from swarmd.errors import ConfigError


def test_default_is_one_process() -> None:
    settings = load_settings(environ={})
    assert settings.workers == 1 and worker_count(settings) == 1


def test_auto_is_the_cpus_this_process_may_use() -> None:
    settings = load_settings(flags={"workers": "auto"}, environ={})
    assert worker_count(settings) == min(MAX_WORKERS, len(os.sched_getaffinity(0)))


def test_a_count_from_the_command_line_or_the_environment() -> None:
    args = build_parser().parse_args(["serve", "--workers", "2"])
    assert worker_count(load_settings(flags={"workers": args.workers}, environ={})) == 2
    assert worker_count(load_settings(environ={"SWARMD_WORKERS": "3"})) == 3


@pytest.mark.parametrize("value", ["0", "-1", str(MAX_WORKERS + 1), "many", "2.5"])
def test_other_values_are_refused_naming_the_key(value: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(flags={"workers": value}, environ={})
    assert error.value.key == "workers"
    assert error.value.source == "command line"


def test_the_worker_spec_variable_is_not_taken_for_a_setting() -> None:
    """$SWARMD_WORKER carries a worker's start-up spec (swarmd.runtime.worker_link), not a key."""
    assert load_settings(environ={"SWARMD_WORKER": "{}"}).workers == 1
