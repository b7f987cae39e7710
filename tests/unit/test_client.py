"""`Client` (blocking) and `AsyncClient`: where their SQLite work runs."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from swarmd import AsyncClient, Client


def _sqlite_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("swarmd-sqlite")]


def test_the_blocking_client_runs_its_statements_on_the_calling_thread(tmp_path: Path) -> None:
    """Its private loop has nothing else to run: no hand-off to a thread and back per call."""
    before = _sqlite_threads()
    with Client(tmp_path / "state") as client:
        job_id = client.submit("echo", gid="GID-1", payload={"n": 1})
        ids = client.submit_many([{"agent": "echo", "gid": f"GID-{i}"} for i in range(3)], swarm=True).job_ids
        assert _sqlite_threads() == before
        assert client.status(job_id).state == "ready"
    with Client(tmp_path / "state") as again:  # durable: a new client reads what the first wrote
        assert [again.status(i).state for i in [job_id, *ids]] == ["ready"] * 4


def test_the_async_client_keeps_its_callers_loop_free(tmp_path: Path) -> None:
    async def main() -> list[str]:
        async with AsyncClient(tmp_path / "state") as client:
            await client.submit("echo", gid="GID-1")
            return _sqlite_threads()

    assert asyncio.run(main())  # its statements ran on the swarmd-sqlite thread


def test_closing_twice_is_harmless_and_a_new_client_reads_on(tmp_path: Path) -> None:
    client = Client(tmp_path / "state")
    job_id = client.submit("echo", gid="GID-1")
    client.close()
    client.close()
    with Client(tmp_path / "state") as again:
        assert again.status(job_id).state == "ready"


def test_a_client_that_cannot_be_made_leaves_no_open_file_behind(tmp_path: Path) -> None:
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    Client(tmp_path / "state").close()  # first use: imports and lazy setup are done
    before = open_fds()
    for _ in range(3):
        with pytest.raises(TypeError):
            Client(tmp_path / "state", no_such_option=1)
    assert open_fds() == before
