"""The plumbing every `async def` test relies on: it runs on uvloop, on a loop of its own."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

#: The second test reads what the first left: one worker runs both, in order (under ``-n 3``,
#: xdist once gave them to two workers, and the second found nothing).
pytestmark = pytest.mark.xdist_group("uvloop_loops")

#: The loop each test below ran on, in the order they ran (pytest runs a module top to bottom).
loops: list[asyncio.AbstractEventLoop] = []


async def test_a_coroutine_test_runs_on_uvloop() -> None:
    loop = asyncio.get_running_loop()
    loops.append(loop)
    assert isinstance(loop, uvloop.Loop)


async def test_each_coroutine_test_gets_a_fresh_loop_and_the_last_one_is_closed() -> None:
    loop = asyncio.get_running_loop()
    assert loops, "runs after test_a_coroutine_test_runs_on_uvloop"
    assert loops[-1] is not loop and loops[-1].is_closed()
    assert isinstance(loop, uvloop.Loop)
