"""A backend factory on either store, for tests that drive a `QueueBackend` directly on both:
the `make_backend` fixture (SQLite in ``tmp_path/state``; the Redis at 127.0.0.1:6379 under a
prefix of its own, deleted afterwards), `opened`, and `outcome_record` for the finishes they
write. Import the fixture into a test module to
use it, as `support.stacks` does for daemons."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.services import forget_prefix, require_redis
from swarmd.ledger.records import OutcomeRecord
from swarmd.queue.base import QueueBackend, Reserved
from swarmd.queue.sqlite.backend import SqliteBackend
from swarmd.storage.sqlite import Durability


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def make_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], QueueBackend]]:
    """A factory of backends on one store: each call, another connection to the same state."""
    if request.param == "sqlite":
        state = tmp_path / "state"
        state.mkdir(mode=0o700)
        yield lambda: SqliteBackend(state, durability=Durability.NORMAL)
        return
    from swarmd.queue.redis.backend import RedisBackend  # noqa: PLC0415 - redis-py is optional

    url = require_redis()
    prefix = f"swarmd-test-{os.urandom(5).hex()}"
    try:
        yield lambda: RedisBackend(url, prefix=prefix)
    finally:
        forget_prefix(url, prefix)


@contextlib.asynccontextmanager
async def opened(make_backend: Callable[[], QueueBackend]) -> AsyncIterator[Any]:
    """A backend from ``make_backend``, open for the block, closed after it."""
    backend = make_backend()
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


def outcome_record(reserved: Reserved, outcome: str) -> bytes:
    """The ledger record a worker writes for ``reserved`` ending now with ``outcome``."""
    return OutcomeRecord(
        job_id=reserved.job_id,
        gid=reserved.gid,
        agent=reserved.agent,
        outcome=outcome,
        attempt=reserved.attempt,
        finished_at=time.time(),
        swarm_id=reserved.job.swarm_id if reserved.job is not None else None,
    ).encode()
