"""Cancellation that a client library lost: redis-py can swallow a cancel that lands while it
reads a reply (or turn it into a timeout), so a loop that called it runs on after its owner
cancelled it, and whoever awaits that loop waits for good. Loops check `raise_if_cancelling`
before they sleep; owners stop such a task with `stop_task`, which waits a bounded time."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

log = structlog.get_logger("swarmd.runtime")


def raise_if_cancelling() -> None:
    """Raise CancelledError if the current task was asked to stop (a cancel lost on the way)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def stop_task(task: asyncio.Task[Any], timeout: float) -> bool:  # noqa: ASYNC109 - a bound, in seconds
    """Cancel ``task`` and wait at most ``timeout`` seconds for it to end; whether it did. A task
    still running then is left behind (logged), so that a stop never hangs on it."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        log.warning("task_did_not_stop", task=task.get_name(), waited_s=timeout)
        return False
    if not task.cancelled() and task.exception() is not None:
        log.error("task_failed_stopping", task=task.get_name(), error=repr(task.exception()))
    return True
