"""Every option and positional of every `swarmd` command says what it is for, and an option with a
default of its own shows it in ``--help``."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from swarmd.cli.parser import HelpFormatter, build_parser


def _parsers(parser: argparse.ArgumentParser, path: str = "swarmd") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def _arguments() -> Iterator[tuple[str, argparse.ArgumentParser, argparse.Action]]:
    for path, parser in _parsers(build_parser()):
        for action in parser._actions:
            if not isinstance(action, argparse._HelpAction | argparse._VersionAction | argparse._SubParsersAction):
                yield path, parser, action


def test_every_option_and_positional_has_help_text() -> None:
    missing = [f"{path} {action.option_strings or action.dest}" for path, _, action in _arguments() if not action.help]
    assert missing == []


def test_every_default_of_its_own_shows_in_help() -> None:
    hidden = []
    for path, parser, action in _arguments():
        assert parser.formatter_class is HelpFormatter, path
        if action.default not in (None, False, argparse.SUPPRESS):
            shown = " ".join(parser.format_help().split())
            if f"(default: {action.default})" not in shown:
                hidden.append(f"{path} {action.option_strings}")
    assert hidden == []


def test_options_whose_default_is_the_configs_name_it() -> None:
    serve = dict(_parsers(build_parser()))["swarmd serve"]
    shown = " ".join(serve.format_help().split())
    assert "most handlers running at once (default: 256)" in shown
    assert "in seconds (default: 30)" in shown
