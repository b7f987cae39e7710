"""On SQLite, a client waiting for results is woken by the daemon's commit, through the
daemon's API socket: with the backstop look set to 30 s, a wait still ends as soon as the
outcome commits, after one look at the ledger before and one after (no polling)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from support.harness import running

from swarmd import Client
from swarmd.queue.sqlite.backend import SqliteBackend

pytestmark = pytest.mark.slow
BACKSTOP = 30.0


def test_a_wait_ends_at_the_commit_not_at_the_backstop(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with running(state, "--agents", "support.agents"), Client(state, wait_backstop=BACKSTOP) as client:
        backend = client._async._backend  # the test counts the client's looks at the ledger
        assert isinstance(backend, SqliteBackend)
        looks = []
        look = backend._entries_of

        async def counted(job_ids: list[str]) -> object:
            looks.append(len(job_ids))
            return await look(job_ids)

        backend._entries_of = counted  # type: ignore[method-assign,assignment]
        job = client.submit("slow", gid="GID-w", payload={"seconds": 0.5})
        started = time.monotonic()
        result = job.wait()
        waited = time.monotonic() - started
    assert result.outcome == "succeeded"
    assert result.queue_wait_s is not None and 0 <= result.queue_wait_s < waited
    assert result.run_s is not None and result.run_s > 0.4  # the handler slept 0.5 s (by the loop's clock)
    assert waited < BACKSTOP / 2, f"woken after {waited:.1f} s: by the backstop, not by the commit"
    assert len(looks) == 2, looks  # one look before the wait, one after the daemon's push


def test_many_waiters_at_once_each_get_their_result(tmp_path: Path) -> None:
    state = tmp_path / "state"
    results: dict[str, str] = {}
    with running(state, "--agents", "support.agents"):
        with Client(state) as client:
            jobs = [client.submit("slow", gid=f"GID-{i}", payload={"seconds": 0.2}) for i in range(20)]

        def wait(job_id: str) -> None:
            with Client(state, wait_backstop=BACKSTOP) as waiter:
                results[job_id] = waiter.wait(job_id).outcome

        threads = [threading.Thread(target=wait, args=(job,)) for job in jobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(BACKSTOP)
    assert results == dict.fromkeys(jobs, "succeeded")
