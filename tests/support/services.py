"""Helpers for tests that need an external program (promtool, redis-server, ...)."""

from __future__ import annotations

import os
import shutil
import socket
from typing import NoReturn
from urllib.parse import urlsplit

import pytest

#: The Redis the tests use (override with SWARMD_TEST_REDIS_URL; keep it on 127.0.0.1).
REDIS_URL = os.environ.get("SWARMD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


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


def require_redis(url: str = REDIS_URL) -> str:
    """The URL of a Redis server that answers PING; skip the test without one.

    Like `require_tool`, ``SWARMD_TEST_STRICT=1`` turns the skip into a failure. Checked with a
    plain socket, so that a missing redis-py also skips rather than errors.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError as exc:
        _missing(f"Redis at {host}:{port} is unreachable ({exc})")
    if not reply.startswith((b"+PONG", b"-NOAUTH")):
        _missing(f"Redis at {host}:{port} answered PING with {reply!r}")
    try:
        import redis  # noqa: F401, PLC0415 - the backend's optional dependency
    except ImportError:
        _missing("redis-py is not installed (pip install swarmd[redis])")
    return url


def _missing(message: str) -> NoReturn:
    if os.environ.get("SWARMD_TEST_STRICT") == "1":
        pytest.fail(f"{message} (SWARMD_TEST_STRICT=1)")
    pytest.skip(message)


def forget_prefix(url: str, prefix: str) -> None:
    """Delete every key a test made under ``prefix`` (``{prefix}:*``) on the Redis at ``url``."""
    import redis  # noqa: PLC0415 - redis-py is the backend's optional dependency

    with redis.Redis.from_url(url) as client:
        keys = list(client.scan_iter(match=f"{{{prefix}}}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.unlink(*keys[start : start + 500])
