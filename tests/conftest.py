"""Shared test plumbing: every `async def` test runs on a fresh uvloop event loop.

anyio's pytest plugin runs them: `anyio_backend` names asyncio with uvloop's loop, and every
coroutine test function is marked for the plugin as it is collected, so tests need no marker.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import uvloop


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    """The loop coroutine tests run on: asyncio's, made by uvloop, one per test."""
    return ("asyncio", {"loop_factory": uvloop.new_event_loop})


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Module | pytest.Class, name: str, obj: object) -> None:
    """Mark each coroutine test function for anyio's plugin before the plugin looks at it."""
    test = getattr(getattr(obj, "hypothesis", None), "inner_test", obj)  # a @given test wraps the coroutine
    if collector.istestfunction(obj, name) and inspect.iscoroutinefunction(test):
        pytest.mark.anyio(obj)
