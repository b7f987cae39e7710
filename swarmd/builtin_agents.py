"""The agents every daemon has: ``sleep``, ``echo`` and ``fail``.

They exist for demos, benchmarks, tests and smoke checks of a deployment. None of them can
run a command, open a file or reach the network. `swarmd.registry.build_registry` puts them in
every daemon's registry (and the CLI checks submits against the same names).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from swarmd.errors import JobValidationError, Permanent

if TYPE_CHECKING:  # swarmd.registry imports this module to build a daemon's registry
    from swarmd.registry import JobContext, Registry

MAX_SLEEP_SECONDS = 3600.0


async def sleep(ctx: JobContext, payload: Any) -> dict[str, Any]:
    """Sleep ``{"seconds": s}`` (0 <= s <= 3600), then return the job's GID."""
    seconds = payload.get("seconds", 0) if isinstance(payload, dict) else payload or 0
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds <= MAX_SLEEP_SECONDS:
        raise Permanent(JobValidationError("payload.seconds", f"{seconds!r} is not a number in [0, 3600]"))
    await asyncio.sleep(seconds)
    return {"agent_gid": ctx.gid, "slept": seconds}


async def echo(ctx: JobContext, payload: Any) -> Any:
    """Return the payload unchanged."""
    return payload


class FailedOnPurpose(Exception):
    """What the ``fail`` agent raises."""


async def fail(ctx: JobContext, payload: Any) -> None:
    """Raise; ``{"permanent": true}`` makes the failure non-retryable."""
    message = payload.get("message", "failed on purpose") if isinstance(payload, dict) else "failed on purpose"
    if isinstance(payload, dict) and payload.get("permanent"):
        raise Permanent(message)
    raise FailedOnPurpose(message)


def register_builtins(registry: Registry) -> None:
    for name, handler in (("sleep", sleep), ("echo", echo), ("fail", fail)):
        if name not in registry:
            registry.register(name, handler)
