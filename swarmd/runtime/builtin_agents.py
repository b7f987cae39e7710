"""The built-in agents live in `swarmd.builtin_agents` (below the runtime, so that the CLI can
know their names); this module keeps the old import path working."""

from swarmd.builtin_agents import MAX_SLEEP_SECONDS, FailedOnPurpose, echo, fail, register_builtins, sleep

__all__ = ["MAX_SLEEP_SECONDS", "FailedOnPurpose", "echo", "fail", "register_builtins", "sleep"]
