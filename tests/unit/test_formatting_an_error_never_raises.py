"""Formatting an error never raises: `swarmd.errors.describe`, `type_name` and `error_text`,
which every log line, span, ledger entry and health message that shows an error goes through."""

from __future__ import annotations

import asyncio

import pytest

from swarmd.errors import MAX_MESSAGE, describe, error_text, type_name


class Evil(Exception):
    def __str__(self) -> str:
        raise Evil()


class NotAString(Exception):
    def __str__(self) -> str:
        return 42  # type: ignore[return-value]  # noqa: PLE0307


class RaisesBase(Exception):
    def __str__(self) -> str:
        raise KeyboardInterrupt


class BadName(type):
    @property
    def __name__(cls) -> str:  # type: ignore[override]
        raise Evil()


class Nameless(Exception, metaclass=BadName):
    pass


def test_an_exception_whose_str_raises_is_described_by_its_type() -> None:
    assert describe(Evil()) == "<Evil: str() failed>"
    assert error_text(Evil()) == "Evil: <Evil: str() failed>"
    assert describe(NotAString()) == "<NotAString: str() failed>"
    assert describe(RaisesBase()) == "<RaisesBase: str() failed>"


def test_a_type_whose_name_raises_has_a_fallback_name() -> None:
    assert type_name(Nameless("x")) == "BaseException"
    assert describe(Nameless("x")) == "x"


def test_messages_are_bounded_and_plain_ones_unchanged() -> None:
    assert describe(ValueError("bad input")) == "bad input"
    assert error_text(ValueError("bad input")) == "ValueError: bad input"
    assert error_text(TimeoutError()) == "TimeoutError"
    assert len(describe(ValueError("x" * (MAX_MESSAGE * 3)))) == MAX_MESSAGE
    group = ExceptionGroup("two failed", [Evil(), ValueError("bad")])
    assert error_text(group) == (
        "ExceptionGroup: two failed (2 sub-exceptions) [Evil: <Evil: str() failed>; ValueError: bad]"
    )


def test_a_cancellation_is_never_swallowed() -> None:
    class Cancelling(Exception):
        def __str__(self) -> str:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        describe(Cancelling())
