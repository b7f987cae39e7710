"""Helpers for tests that need an external program (promtool, redis-server, ...)."""

from __future__ import annotations

import os
import shutil

import pytest


def require_tool(name: str) -> str:
    """The path of the program ``name``; skip the test without it.

    With ``SWARMD_TEST_STRICT=1`` (CI) a missing program fails the test instead, so that a
    broken CI image cannot turn the checks that need it into silent skips.
    """
    path = shutil.which(name)
    if path is not None:
        return path
    message = f"{name} not found on PATH"
    if os.environ.get("SWARMD_TEST_STRICT") == "1":
        pytest.fail(f"{message} (SWARMD_TEST_STRICT=1)")
    pytest.skip(message)
