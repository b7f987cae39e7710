"""A failure records its exception's type, message and traceback: the traceback bounded to its
innermost frames, and the formatting never raises, whatever the exception does."""

from __future__ import annotations

from swarmd.runtime.failures import MAX_TRACEBACK_BYTES, TRUNCATED, bounded, failure_info


def _recurse(n: int) -> None:
    if n == 0:
        raise ValueError("innermost")
    _recurse(n - 1)


def _caught(fn: object, *args: object) -> BaseException:
    try:
        fn(*args)  # type: ignore[operator]
    except BaseException as exc:
        return exc
    raise AssertionError("did not raise")


def test_a_failure_has_its_type_message_and_traceback() -> None:
    info = failure_info(_caught(_recurse, 2))
    assert (info["type"], info["message"]) == ("ValueError", "innermost")
    assert info["traceback"].startswith("Traceback (most recent call last):")
    assert info["traceback"].count("in _recurse") == 3
    assert info["traceback"].endswith("ValueError: innermost\n")


def _chained(n: int) -> None:
    """Raise a chain of ``n`` + 1 exceptions (each one's traceback printed before the next)."""
    try:
        if n == 0:
            _recurse(3)
        _chained(n - 1)
    except ValueError as exc:
        raise ValueError(f"level {n}") from exc


def test_a_long_traceback_keeps_its_innermost_frames_within_the_bound() -> None:
    info = failure_info(_caught(_chained, 300))
    traceback = info["traceback"]
    assert len(traceback.encode()) <= MAX_TRACEBACK_BYTES
    assert traceback.startswith(TRUNCATED) and traceback.endswith("ValueError: level 300\n")
    assert "ValueError: innermost" not in traceback  # the first raised (printed first) went
    assert bounded("é" * 20_000).encode().__len__() <= MAX_TRACEBACK_BYTES


class Hostile(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


def test_an_exception_whose_str_raises_falls_back_to_its_type_name() -> None:
    info = failure_info(_caught(_raise, Hostile()))
    assert info["type"] == "Hostile" and info["message"] == "<Hostile: str() failed>"  # as swarmd.errors.describe
    assert isinstance(info["traceback"], str) and info["traceback"]


def _raise(exc: BaseException) -> None:
    raise exc
