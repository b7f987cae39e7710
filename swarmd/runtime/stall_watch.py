"""Naming what blocks the event loop: a watcher thread that notices when the loop has not turned
for a while, and reports the loop thread's stack and the job whose handler is on it.

A handler that calls ``time.sleep(5)`` (or any blocking code) stops every other job and the
heartbeat; ``/healthz`` turns 503 and the watchdog may kill the daemon, but neither says who
did it. The watcher runs on its own thread, so it keeps running while the loop is stuck. It
costs the hot path nothing: the job is found afterwards, by walking the loop thread's frames
(``sys._current_frames()``) for the `JobContext` a handler was called with.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Final

from swarmd.registry import JobContext

#: Most bytes of stack text kept in a report (the innermost frames are kept).
MAX_STACK_CHARS: Final = 8192


@dataclass(frozen=True, slots=True)
class Stall:
    """The event loop has not turned for ``seconds``; ``stack`` is where its thread was."""

    seconds: float
    stack: str
    job_id: str | None = None
    agent: str | None = None
    gid: str | None = None


def job_on_stack(frame: FrameType | None) -> JobContext | None:
    """The `JobContext` of the innermost handler on this stack, if a handler is on it."""
    while frame is not None:
        for value in frame.f_locals.values():
            if isinstance(value, JobContext):
                return value
        frame = frame.f_back
    return None


def describe(frame: FrameType, seconds: float) -> Stall:
    """A `Stall` report for a loop thread stopped at ``frame``."""
    stack = "".join(traceback.format_stack(frame))[-MAX_STACK_CHARS:]
    ctx = job_on_stack(frame)
    if ctx is None:
        return Stall(seconds, stack)
    return Stall(seconds, stack, job_id=ctx.job.id, agent=ctx.job.agent, gid=ctx.job.gid)


class StallWatcher:
    """Checks every ``threshold / 4`` seconds whether ``last_turn()`` (the monotonic time the
    loop last turned) is older than ``threshold``; reports each stall once to ``on_stall``,
    from the watcher's thread (so ``on_stall`` must be thread-safe: a log line, a counter)."""

    def __init__(
        self,
        *,
        last_turn: Callable[[], float],
        loop_thread: int,
        threshold: float,
        on_stall: Callable[[Stall], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._last_turn = last_turn
        self._loop_thread = loop_thread
        self.threshold = threshold
        self._on_stall = on_stall
        self._clock = clock
        self._reported: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check_once(self) -> Stall | None:
        """Report a stall if the loop is stalled now and this stall was not reported yet."""
        turned = self._last_turn()
        stalled = self._clock() - turned
        if stalled < self.threshold or self._reported == turned:
            return None
        frame = sys._current_frames().get(self._loop_thread)
        if frame is None:  # the loop thread is gone: nothing to name
            return None
        self._reported = turned
        stall = describe(frame, stalled)
        self._on_stall(stall)
        return stall

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="swarmd-stall-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.threshold / 4):
            try:
                self.check_once()
            except Exception:  # noqa: S112 - a watcher that cannot report must not die: try again
                continue
