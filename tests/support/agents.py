"""Agents for integration tests, loaded by a real daemon with ``--agents support.agents``.

The harness puts ``tests/`` on the daemon's PYTHONPATH. Each agent exists to force one
behaviour deterministically (a barrier, a lie about identity, a failure on chosen attempts).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from swarmd import JobContext, Permanent, agent
from swarmd.identity import current_gid

_barriers: dict[str, asyncio.Barrier] = {}


@agent("barrier")
async def barrier(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Wait until ``parties`` jobs with the same ``key`` are all running, then return."""
    key = str(payload.get("key", "default"))
    gate = _barriers.setdefault(key, asyncio.Barrier(int(payload["parties"])))
    await gate.wait()
    await asyncio.sleep(float(payload.get("then_sleep", 0)))
    return {"agent_gid": ctx.gid}


@agent("liar")
async def liar(ctx: JobContext, payload: Any) -> dict[str, Any]:
    """An identity violation: the result names another GID."""
    return {"agent_gid": "SOMEONE-ELSE"}


@agent("hijacker")
async def hijacker(ctx: JobContext, payload: Any) -> None:
    """An identity violation: the handler rebinds the GID contextvar."""
    current_gid.set("HIJACKED")


@agent("flaky")
async def flaky(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Fail on the first ``fail_times`` attempts, then succeed."""
    if ctx.attempt <= int(payload.get("fail_times", 1)):
        raise RuntimeError(f"flaky failure on attempt {ctx.attempt}")
    return {"agent_gid": ctx.gid, "attempt": ctx.attempt}


@agent("slow")
async def slow(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Sleep ``seconds`` (a long job, for timeouts and leases)."""
    await asyncio.sleep(float(payload.get("seconds", 3600)))
    return {"agent_gid": ctx.gid}


@agent("permanent")
async def permanent(ctx: JobContext, payload: Any) -> None:
    raise Permanent("permanent failure on purpose")


@agent("unencodable")
async def unencodable(ctx: JobContext, payload: Any) -> object:
    """Returns something that is not JSON data."""
    return object()


class Hostile(BaseException):
    """Not an Exception: a handler must still not take the daemon down with it."""


@agent("base_exception")
async def base_exception(ctx: JobContext, payload: Any) -> None:
    raise Hostile("a BaseException subclass")


@agent("forever")
async def forever(ctx: JobContext, payload: Any) -> None:
    """Loops forever (yielding); only its timeout ends it."""
    while True:
        await asyncio.sleep(0.01)


@agent("blocker")
async def blocker(ctx: JobContext, payload: dict[str, Any]) -> None:
    """Blocks the event loop for ``seconds`` (a handler that calls blocking code)."""
    time.sleep(float(payload.get("seconds", 3)))


@agent("traced")
async def traced(ctx: JobContext, payload: Any) -> dict[str, Any]:
    """Opens a span of its own and logs a line, to check parentage and log correlation."""
    from opentelemetry import trace  # noqa: PLC0415

    with trace.get_tracer(__name__).start_as_current_span("handler-work"):
        ctx.log.info("handler_line", note="from the handler")
    return {"agent_gid": ctx.gid}


def _append_line(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")


@agent("cancellable")
async def cancellable(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Sleep ``seconds``; on CancelledError (cancel, timeout, fail-fast) append
    ``cancelled attempt N`` to the file ``marker``, then re-raise."""
    try:
        await asyncio.sleep(float(payload.get("seconds", 3600)))
    except asyncio.CancelledError:
        _append_line(str(payload["marker"]), f"cancelled attempt {ctx.attempt}")
        raise
    return {"agent_gid": ctx.gid}


@agent("record_start")
async def record_start(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Append ``start attempt N`` to the file ``marker`` each time it starts (so a test can
    count the runs of one job, on whichever daemon), then sleep ``seconds``."""
    _append_line(str(payload["marker"]), f"start attempt {ctx.attempt}")
    await asyncio.sleep(float(payload.get("seconds", 0)))
    return {"agent_gid": ctx.gid}


class Evil(Exception):
    """An exception that cannot be formatted: its ``__str__`` (and repr) raise another Evil."""

    def __str__(self) -> str:
        raise Evil()

    def __repr__(self) -> str:
        raise Evil()


@agent("evil")
async def evil(ctx: JobContext, payload: Any) -> None:
    raise Evil()


class _Unprintable:
    """A return value that is not JSON data and cannot be printed either."""

    def __str__(self) -> str:
        raise Evil()

    def __repr__(self) -> str:
        raise Evil()


@agent("evil_result")
async def evil_result(ctx: JobContext, payload: Any) -> object:
    return _Unprintable()


@agent("swallow_cancel")
async def swallow_cancel(ctx: JobContext, payload: dict[str, Any] | None) -> dict[str, Any]:
    """Swallow every CancelledError and keep going; return after ``seconds`` (3600 by
    default), or, with ``then_return``, as soon as it has swallowed one."""
    payload = payload or {}
    deadline = time.monotonic() + float(payload.get("seconds", 3600))
    while time.monotonic() < deadline:
        try:
            await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        except asyncio.CancelledError:
            if payload.get("then_return"):
                break
    return {"agent_gid": ctx.gid}


#: Tasks the ``leave_task`` agent left behind (a reference, so they are not collected).
_leftovers: set[asyncio.Task[None]] = set()


async def _raise_later(kind: str) -> None:
    await asyncio.sleep(0.1)
    if kind == "systemexit":
        raise SystemExit(3)
    if kind == "keyboardinterrupt":
        raise KeyboardInterrupt
    raise RuntimeError("a leftover task failed")


async def _ignore_cancel() -> None:
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            continue  # swallowed: a leftover nobody can stop


@agent("leave_task")
async def leave_task(ctx: JobContext, payload: dict[str, Any] | None) -> dict[str, Any]:
    """Start a task and return without awaiting it. ``kind``: ``systemexit`` or
    ``keyboardinterrupt`` (raised 0.1 s later), ``ignore_cancel`` (runs forever, swallowing
    every cancel), else a RuntimeError 0.1 s later."""
    kind = str((payload or {}).get("kind", "exception"))
    task = asyncio.create_task(_ignore_cancel() if kind == "ignore_cancel" else _raise_later(kind))
    _leftovers.add(task)
    return {"agent_gid": ctx.gid}


@agent("crash_daemon")
async def crash_daemon(ctx: JobContext, payload: dict[str, Any]) -> None:
    """Makes the daemon's runtime itself fail while this job runs (its heartbeat raises), as a
    bug of swarmd's own that some job provokes would: each daemon running it crashes. Appends
    ``start attempt N`` to ``marker`` first."""
    from swarmd.telemetry.metrics import Metrics  # noqa: PLC0415

    _append_line(str(payload["marker"]), f"start attempt {ctx.attempt}")

    def broken(self: Metrics, seconds: float) -> None:
        raise RuntimeError("the runtime broke while crash_daemon ran")

    Metrics.observe_loop_lag = broken  # type: ignore[method-assign]
    await asyncio.sleep(3600)


@agent("sized_result", max_attempts=1)
async def sized_result(ctx: JobContext, payload: dict[str, Any]) -> str:
    """Return a JSON string whose encoding is exactly ``bytes`` bytes long (quotes included)."""
    return "x" * (int(payload["bytes"]) - 2)


def _innermost(message: str) -> None:
    raise ValueError(message)


@agent("raises_deep", max_attempts=1)
async def raises_deep(ctx: JobContext, payload: Any) -> None:
    """Fail with a ValueError raised two frames down (`_innermost`), for tracebacks."""
    _innermost(f"deep failure of {ctx.gid}")


# -- workflows (children, follow-ups) ------------------------------------------------------------


@agent("spawner")
async def spawner(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Submit ``children`` children, then fail on the first ``fail_times`` attempts: only the
    attempt that succeeds commits them. Each child runs ``agent`` (default echo) with ``child``
    (default {}) plus its position ``n`` as payload, after ``delay`` seconds (default 0)."""
    agent_name = str(payload.get("agent", "echo"))
    base = dict(payload.get("child", {}))
    delay = float(payload.get("delay", 0))
    ids = [
        ctx.submit(agent_name, gid=ctx.gid, payload={**base, "n": n}, delay=delay)
        for n in range(int(payload["children"]))
    ]
    if ctx.attempt <= int(payload.get("fail_times", 0)):
        raise RuntimeError(f"spawner fails after submitting, attempt {ctx.attempt}")
    return {"children": ids}


@agent("fan_out")
async def fan_out(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    """A pipeline stage: a swarm of ``width`` ``member`` jobs whose follow-up is ``then``."""
    specs = [
        {"agent": payload.get("member", "echo"), "gid": ctx.gid, "payload": {"n": n}} for n in range(payload["width"])
    ]
    submitted = ctx.submit_many(specs, swarm=True, then=payload["then"])
    return {"swarm_id": submitted.swarm_id, "follow_up": submitted.follow_up}


@agent("pass_or_fail", max_attempts=1)
async def pass_or_fail(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Succeed, or fail at once (no retry) when ``payload["fail"]``."""
    if payload.get("fail"):
        raise Permanent(f"member {payload.get('n')} fails")
    return {"n": payload.get("n")}


@agent("aggregate")
async def aggregate(ctx: JobContext, payload: Any) -> dict[str, Any]:
    """A follow-up: count its swarm's outcomes (and pass its payload on)."""
    results = await ctx.swarm_results()
    counts: dict[str, int] = {}
    for result in results:
        counts[result.outcome] = counts.get(result.outcome, 0) + 1
    return {"follows": ctx.follows, "members": len(results), "outcomes": counts, "payload": payload}


@agent("tick")
async def tick(ctx: JobContext, payload: Any) -> dict[str, Any]:
    """Return the job's idempotency key: a schedule's job names its schedule and tick there."""
    return {"key": ctx.job.idempotency_key}


@agent("file_barrier")
async def file_barrier(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    """A barrier across processes (the workers of one daemon): append a line to the file
    ``path``, then wait until it holds ``parties`` lines and, if ``release`` names a file, until
    that file exists."""
    path = str(payload["path"])
    _append_line(path, f"{ctx.job.id} attempt {ctx.attempt}")
    release = payload.get("release")
    while True:
        with open(path, encoding="utf-8") as handle:
            arrived = len(handle.read().splitlines())
        if arrived >= int(payload["parties"]) and (release is None or os.path.exists(str(release))):
            return {"agent_gid": ctx.gid}
        await asyncio.sleep(0.01)
