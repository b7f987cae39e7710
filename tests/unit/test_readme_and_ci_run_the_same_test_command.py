"""README.md gives the test command, and `.ci/run` runs exactly it: the suite CI passes is the one
a developer runs (in parallel, with pytest-xdist's workers and its groups)."""

from __future__ import annotations

import re

from support.paths import REPO

README_LINE = re.compile(r"^The test command itself, .*?: `(?P<command>[^`]+)`", re.MULTILINE)


def readme_command() -> str:
    found = README_LINE.search((REPO / "README.md").read_text())
    assert found is not None, "README.md no longer states the test command"
    return found["command"]


def ci_commands() -> list[str]:
    lines = (REPO / ".ci" / "run").read_text().splitlines()
    return [line.strip() for line in lines if " -m pytest" in line and not line.lstrip().startswith("#")]


def test_ci_runs_the_command_the_readme_gives() -> None:
    assert ci_commands() == [readme_command()]


def test_the_command_runs_the_suite_in_parallel_keeping_xdist_groups_together() -> None:
    command = readme_command().split()
    assert "-n" in command and int(command[command.index("-n") + 1]) > 1
    assert command[command.index("--dist") + 1] == "loadgroup"  # xdist_group marks are honoured


def test_tests_readme_gives_the_same_command() -> None:
    assert readme_command() in (REPO / "tests" / "README.md").read_text()
