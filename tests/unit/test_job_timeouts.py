"""Shared-timer job timeouts: each fires once, on time, unless cancelled; memory stays bounded."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from swarmd.runtime.deadlines import Deadlines


class FakeLoop:
    """Just enough of a loop: a clock the test moves, and call_at timers it runs in order."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[tuple[float, int, object, tuple[object, ...], list[bool]]] = []
        self.seq = 0

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: object, *args: object) -> object:
        cancelled = [False]
        self.seq += 1
        self.timers.append((when, self.seq, callback, args, cancelled))

        class Handle:
            def cancel(self) -> None:
                cancelled[0] = True

        return Handle()

    def advance(self, to: float) -> None:
        self.now = to
        while True:
            due = sorted((t for t in self.timers if t[0] <= to and not t[4][0]), key=lambda t: (t[0], t[1]))
            if not due:
                return
            timer = due[0]
            self.timers.remove(timer)
            timer[2](*timer[3])  # type: ignore[operator]


def make() -> tuple[Deadlines, FakeLoop, list[tuple[str, float]]]:
    loop = FakeLoop()
    fired: list[tuple[str, float]] = []
    deadlines = Deadlines(lambda job_id: fired.append((job_id, loop.now)), loop)  # type: ignore[arg-type]
    return deadlines, loop, fired


def test_each_timeout_fires_once_at_its_deadline_unless_cancelled() -> None:
    deadlines, loop, fired = make()
    deadlines.start("a", 5.0)
    loop.advance(1.0)
    deadlines.start("b", 5.0)
    deadlines.start("c", 2.0)
    deadlines.cancel("b")
    loop.advance(2.9)
    assert fired == []  # c's deadline is 3.0
    loop.advance(3.0)
    assert fired == [("c", 3.0)]
    loop.advance(4.9)
    assert fired == [("c", 3.0)]  # a's deadline is 5.0; b was cancelled
    loop.advance(10.0)
    assert fired == [("c", 3.0), ("a", 10.0)]
    assert len(deadlines) == 0
    assert not [t for t in loop.timers if not t[4][0]]  # no timer left armed


def test_restarting_a_timeout_replaces_the_old_deadline() -> None:
    deadlines, loop, fired = make()
    deadlines.start("a", 1.0)
    loop.advance(0.5)
    deadlines.start("a", 1.0)  # a retry of the same job
    loop.advance(1.2)
    assert fired == []
    loop.advance(1.5)
    assert fired == [("a", 1.5)]


def test_cancelled_entries_do_not_accumulate() -> None:
    deadlines, loop, fired = make()
    for i in range(10_000):
        deadlines.start(f"j{i}", 300.0)
        deadlines.cancel(f"j{i}")
    assert len(deadlines) == 0
    assert sum(len(fifo) for fifo in deadlines._fifos.values()) < 2100
    loop.advance(400.0)
    assert fired == []


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["start", "cancel", "tick"]), st.integers(0, 9), st.sampled_from([0.5, 1.0, 3.0])),
        max_size=80,
    )
)
def test_a_timeout_fires_exactly_when_its_latest_start_runs_out_uncancelled(
    ops: list[tuple[str, int, float]],
) -> None:
    deadlines, loop, fired = make()
    expected: dict[str, float] = {}  # job -> deadline of its live timeout
    should_fire: list[tuple[str, float]] = []  # (job, the tick at which it is due)
    for op, n, seconds in ops:
        job = f"j{n}"
        if op == "start":
            deadlines.start(job, seconds)
            expected[job] = loop.now + seconds
        elif op == "cancel":
            deadlines.cancel(job)
            expected.pop(job, None)
        else:
            target = loop.now + seconds
            for job_id, deadline in sorted(expected.items(), key=lambda kv: kv[1]):
                if deadline <= target:
                    should_fire.append((job_id, target))
                    del expected[job_id]
            loop.advance(target)
    assert sorted(fired) == sorted(should_fire)


async def test_on_a_real_loop_an_expired_timeout_calls_back() -> None:
    fired = asyncio.Event()
    deadlines = Deadlines(lambda job_id: fired.set())
    deadlines.start("a", 0.01)
    await asyncio.wait_for(fired.wait(), 2)
    assert len(deadlines) == 0
