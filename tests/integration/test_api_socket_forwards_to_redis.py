"""On Redis the daemon's API socket forwards to the daemon's own Redis connection: a producer
without Redis credentials submits and reads through it, attributed as on SQLite."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.harness import Daemon, wait_until
from support.redis_deployment import fresh_prefix
from support.services import forget_prefix, require_redis

from swarmd.client import Client
from swarmd.config import Settings

pytestmark = pytest.mark.slow


@pytest.fixture
def prefix() -> Iterator[tuple[str, str]]:
    """The shared Redis and a fresh key prefix, whose keys are deleted afterwards."""
    url = require_redis()
    name = fresh_prefix()
    try:
        yield url, name
    finally:
        forget_prefix(url, name)


def test_a_producer_submits_and_reads_through_the_socket_of_a_redis_daemon(
    tmp_path: Path, prefix: tuple[str, str]
) -> None:
    url, name = prefix
    path = tmp_path / "api.sock"
    args = ("--backend", "redis", "--redis-url", url, "--redis-prefix", name, "--allow-volatile-redis")
    with (
        Daemon(tmp_path / "state", *args, env={"SWARMD_API_SOCKET": str(path)}),
        Client(None, settings=Settings(backend="sqlite"), socket=path) as client,
    ):
        submitted = client.submit_many([{"agent": "echo", "gid": f"GID-{i}"} for i in range(3)], swarm=True)
        assert submitted.swarm_id is not None
        wait_until(
            lambda: all(info.state == "done" for info in client.swarm_status(str(submitted.swarm_id))),
            what="the swarm done, read through the socket",
        )
        entries = client.ledger_tail(3)
    assert sorted(entry.job_id or "" for entry in entries) == sorted(submitted.job_ids)
    for entry in entries:
        assert entry.decoded()["submitted_by"].startswith(f"uid:{os.geteuid()}(")
    assert not path.exists()  # the daemon removed the socket it made


def test_a_swarm_with_a_follow_up_submitted_through_the_socket_runs_its_follow_up_once(
    tmp_path: Path, prefix: tuple[str, str]
) -> None:
    url, name = prefix
    path = tmp_path / "api.sock"
    args = ("--backend", "redis", "--redis-url", url, "--redis-prefix", name, "--allow-volatile-redis")
    with (
        Daemon(tmp_path / "state", *args, "--agents", "support.agents", env={"SWARMD_API_SOCKET": str(path)}),
        Client(None, settings=Settings(backend="sqlite"), socket=path) as client,
    ):
        submitted = client.submit_many(
            [{"agent": "echo", "gid": f"GID-{i}"} for i in range(4)],
            swarm=True,
            then={"agent": "aggregate", "gid": "GID-AGG"},
        )
        assert submitted.follow_up is not None
        got = client.wait(submitted.follow_up, timeout=30)
        progress = client.swarm_progress(str(submitted.swarm_id))
    assert got.ok and got.result["outcomes"] == {"succeeded": 4}
    assert progress is not None and (progress.ended, progress.follow_up) == (4, submitted.follow_up)
