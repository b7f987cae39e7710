"""What an operator does through the public `Client` (the CLI does nothing else): list jobs,
count them, read the ledger's tail or all of it in batches, and handle dead letters."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec
import pytest

from swarmd import AsyncClient, Client, JobInfo, JobState, StoredEntry, UnknownAgentError
from swarmd.cli import main
from swarmd.config import Settings
from swarmd.ledger.records import OutcomeRecord
from swarmd.queue.base import Disposition, Finish
from swarmd.queue.factory import open_backend


def _cancelled_ledger(client: Client, n: int) -> list[str]:
    """``n`` ledger entries, written without a daemon: a swarm cancelled while still queued."""
    submitted = client.submit_many([{"agent": "echo", "gid": f"GID-{i}"} for i in range(n)], swarm=True)
    assert submitted.swarm_id is not None
    assert sorted(client.cancel(swarm_id=submitted.swarm_id)) == sorted(submitted.job_ids)
    return submitted.job_ids


async def _dead_letter(state: Path, count: int) -> None:
    """Reserve ``count`` ready jobs and dead-letter them, as a daemon whose handler failed would."""
    backend = open_backend(Settings(), state)
    await backend.open()
    try:
        reserved = await backend.reserve(count, lease=30.0)
        finishes = []
        for item in reserved:
            record = OutcomeRecord(
                job_id=item.job_id,
                gid=item.gid,
                agent=item.agent,
                outcome="dead_lettered",
                attempt=item.attempt,
                finished_at=time.time(),
            ).encode()
            finish = Finish(item.job_id, Disposition.DEAD, record=record, error='{"type": "Boom"}')
            finishes.append(finish)
        await backend.finish(finishes)
    finally:
        await backend.close()


def test_jobs_are_listed_and_counted_by_state(tmp_path: Path) -> None:
    with Client(tmp_path / "state") as client:
        ready = [client.submit("echo", gid=f"GID-{i}", priority=i) for i in range(2)]
        delayed = client.submit("echo", gid="GID-later", delay=3600)
        everything = client.list_jobs()
        assert [info.job_id for info in everything] == [ready[1], ready[0], delayed]  # priority first
        assert all(isinstance(info, JobInfo) and isinstance(info.state, JobState) for info in everything)
        assert [info.job_id for info in client.list_jobs(JobState.DELAYED)] == [delayed]
        assert [info.job_id for info in client.list_jobs(JobState.READY, limit=1)] == [ready[1]]
        assert client.counts() == {"ready": 2, "delayed": 1, "leased": 0, "dead": 0}


def test_the_ledger_is_read_by_its_tail_or_whole_in_batches(tmp_path: Path) -> None:
    with Client(tmp_path / "state") as client:
        job_ids = _cancelled_ledger(client, 7)
        whole = list(client.iter_ledger(batch_size=3))
        assert [entry.index for entry in whole] == list(range(7))
        assert sorted(entry.job_id or "" for entry in whole) == sorted(job_ids)
        assert all(isinstance(entry, StoredEntry) for entry in whole)
        assert list(client.iter_ledger(batch_size=7)) == whole  # a last batch that is exactly full
        assert list(client.iter_ledger(5, batch_size=1)) == whole[5:]
        assert client.ledger_tail(2) == whole[5:]
        assert client.ledger() == whole
        assert client.verify().ok


def test_the_async_client_reads_the_ledger_in_batches_too(tmp_path: Path) -> None:
    with Client(tmp_path / "state") as client:
        _cancelled_ledger(client, 5)
        expected = client.ledger()

    async def read() -> tuple[list[StoredEntry], list[StoredEntry]]:
        async with AsyncClient(tmp_path / "state") as reader:
            return [entry async for entry in reader.iter_ledger(batch_size=2)], await reader.ledger_tail(1)

    whole, tail = asyncio.run(read())
    assert whole == expected
    assert tail == expected[-1:]


def test_dead_letters_are_listed_requeued_and_purged(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Client(state) as client:
        first, second = client.submit("echo", gid="GID-1"), client.submit("echo", gid="GID-2")
    asyncio.run(_dead_letter(state, 2))
    with Client(state) as client:
        letters = client.dead_letters()
        assert sorted(info.job_id for info in letters) == sorted([first, second])
        assert [(info.state, info.error) for info in letters] == [(JobState.DEAD, {"type": "Boom"})] * 2
        [(old, new)] = client.requeue(first)
        assert old == first and client.status(new).state == JobState.READY
        assert [info.job_id for info in client.dead_letters()] == [second]
        assert client.purge_dead(3600) == 0
        assert client.purge_dead(0) == 1
        assert client.dead_letters() == []
        assert client.requeue(all_dead=True) == []


def test_known_agents_are_read_and_set_in_public(tmp_path: Path) -> None:
    with Client(tmp_path / "state") as client:
        assert client.known_agents is None  # nothing given, no daemon has published any
        assert client.published_agents() is None
        client.known_agents = ["echo"]
        assert client.known_agents == {"echo"}
        client.submit("echo", gid="GID-1")
        with pytest.raises(UnknownAgentError):
            client.submit("sleep", gid="GID-1")
        client.known_agents = None
        client.submit("anything", gid="GID-1")


def test_the_cli_exports_lists_and_purges_through_the_client(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    with Client(state) as client:
        job_ids = _cancelled_ledger(client, 3)
        queued = client.submit("echo", gid="GID-q")
    flags = ["--state-dir", str(state)]
    assert main(["ledger", "export", *flags]) == 0
    rows = [msgspec.json.decode(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(row["job_id"] for row in rows) == sorted(job_ids)
    assert main(["ledger", "tail", "-n", "1", "--json", *flags]) == 0
    assert [msgspec.json.decode(line)["index"] for line in capsys.readouterr().out.splitlines()] == [2]
    assert main(["jobs", "--state", "ready", "--json", *flags]) == 0
    [listed] = msgspec.json.decode(capsys.readouterr().out)
    assert (listed["job_id"], listed["state"]) == (queued, "ready")
    assert main(["dlq", "purge", "--older-than", "1d", *flags]) == 0
    assert capsys.readouterr().out == "purged 0 dead letters\n"
