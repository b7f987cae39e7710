"""The identity check: the GID an agent speaks for, bound for the whole run of its handler.

The GID lives in a contextvar. asyncio copies the context into every task it creates, so
tasks a handler spawns inherit the GID; a handler that rebinds it is caught by
`identity_violation` when it returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, Final

current_gid: Final[ContextVar[str | None]] = ContextVar("swarmd_current_gid", default=None)
#: What ``isinstance`` checks for a mapping on a per-job path: a dict is recognised by its own
#: check, before the Mapping ABC's (a Python-level ``__instancecheck__`` call per job).
MAPPING_TYPES: Final = (dict, Mapping)


def get_gid() -> str | None:
    """The GID bound for the running handler, or None outside one."""
    return current_gid.get()


def identity_violation(expected_gid: str, result: Any) -> str | None:
    """Why the handler that just returned broke its identity, or None if it did not.

    Two ways to break it: the result is a mapping whose ``agent_gid`` names another GID, or
    the contextvar no longer holds the job's GID.
    """
    bound = current_gid.get()
    if bound != expected_gid:
        return f"GID contextvar holds {bound!r}, expected {expected_gid!r}"
    if result is not None and isinstance(result, MAPPING_TYPES):
        claimed = result.get("agent_gid")
        if claimed is not None and claimed != expected_gid:
            return f"result names agent_gid {claimed!r}, expected {expected_gid!r}"
    return None
