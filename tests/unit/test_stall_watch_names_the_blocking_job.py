"""When a handler blocks the event loop, the stall watcher names the job, its agent and the
line it is blocked on — once per stall — without anything on the hot path."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from swarmd.model import new_job
from swarmd.registry import JobContext
from swarmd.runtime.stall_watch import Stall, StallWatcher


async def blocking_handler(ctx: JobContext, payload: Any, entered: threading.Event, release: threading.Event) -> None:
    entered.set()
    release.wait()  # blocks the whole event loop, as time.sleep would


@contextmanager
def loop_thread_blocked_in_a_handler(job_id: str = "J-stuck") -> Iterator[int]:
    entered, release = threading.Event(), threading.Event()
    ctx = JobContext(job=new_job(job_id=job_id, gid="GID-7", agent="slowpoke"), log=None)
    thread = threading.Thread(target=asyncio.run, args=(blocking_handler(ctx, None, entered, release),))
    thread.start()
    try:
        assert entered.wait(10)
        assert thread.ident is not None
        yield thread.ident
    finally:
        release.set()
        thread.join()


def test_a_stall_names_the_job_agent_and_blocking_line() -> None:
    reports: list[Stall] = []
    with loop_thread_blocked_in_a_handler() as ident:
        watcher = StallWatcher(
            last_turn=lambda: 100.0, loop_thread=ident, threshold=1.0, on_stall=reports.append, clock=lambda: 105.0
        )
        stall = watcher.check_once()
    assert stall is not None and reports == [stall]
    assert (stall.job_id, stall.agent, stall.gid) == ("J-stuck", "slowpoke", "GID-7")
    assert stall.seconds == 5.0
    assert "blocking_handler" in stall.stack and "release.wait()" in stall.stack


def test_each_stall_is_reported_once_and_a_new_one_again() -> None:
    reports: list[Stall] = []
    last_turn = [100.0]
    with loop_thread_blocked_in_a_handler() as ident:
        watcher = StallWatcher(
            last_turn=lambda: last_turn[0],
            loop_thread=ident,
            threshold=1.0,
            on_stall=reports.append,
            clock=lambda: 110.0,
        )
        assert watcher.check_once() is not None
        assert watcher.check_once() is None  # the same stall, still going on
        last_turn[0] = 108.0  # the loop turned once, then stalled again
        assert watcher.check_once() is not None
    assert len(reports) == 2


def test_a_loop_that_turns_is_not_a_stall() -> None:
    with loop_thread_blocked_in_a_handler() as ident:
        watcher = StallWatcher(
            last_turn=lambda: 100.0, loop_thread=ident, threshold=1.0, on_stall=lambda _: None, clock=lambda: 100.5
        )
        assert watcher.check_once() is None


def test_a_stall_outside_any_handler_names_no_job() -> None:
    entered, release = threading.Event(), threading.Event()

    def stuck() -> None:
        entered.set()
        release.wait()

    thread = threading.Thread(target=stuck)
    thread.start()
    try:
        assert entered.wait(10) and thread.ident is not None
        watcher = StallWatcher(
            last_turn=lambda: 0.0, loop_thread=thread.ident, threshold=1.0, on_stall=lambda _: None, clock=lambda: 9.0
        )
        stall = watcher.check_once()
    finally:
        release.set()
        thread.join()
    assert stall is not None and stall.job_id is None and stall.agent is None
    assert "stuck" in stall.stack
