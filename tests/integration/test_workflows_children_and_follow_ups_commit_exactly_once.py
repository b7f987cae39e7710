"""Issue 16: agents that start agents, and a follow-up when a swarm ends — each exactly once.

A handler's children (``ctx.submit``) are written in the commit of its successful outcome, never
by an attempt that fails; a swarm's follow-up (``then=``) is submitted by the commit that records
its last member. Each test runs a real `swarmd serve` on SQLite and on the Redis at 127.0.0.1:6379.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from support.stacks import Stack, stack

from swarmd import AsyncClient, JobValidationError, UnknownAgentError

pytestmark = pytest.mark.slow
__all__ = ["stack"]  # the fixture, on both backends


@pytest.fixture
async def served(stack: Stack) -> AsyncIterator[AsyncClient]:
    with stack.daemon():
        async with stack.client() as client:
            yield client


async def _entries(client: AsyncClient) -> list[dict[str, object]]:
    return [entry.decoded() | {"job_id": entry.job_id} async for entry in client.iter_ledger()]


async def test_a_handler_that_submits_three_children_and_fails_twice_commits_exactly_three(
    served: AsyncClient,
) -> None:
    parent = await served.submit("spawner", gid="GID-P", payload={"children": 3, "fail_times": 2}, max_attempts=5)
    got = await served.wait(parent, timeout=30)
    assert got.ok and got.attempts == 3
    children = got.result["children"]
    assert len(children) == len(set(children)) == 3
    results = await served.wait_many(children, timeout=30)
    assert [result.result for result in results] == [{"n": 0}, {"n": 1}, {"n": 2}]
    entries = await _entries(served)
    # exactly the parent and its three children: the two failed attempts submitted nothing
    assert sorted(str(entry["job_id"]) for entry in entries) == sorted([parent, *children])
    (parent_entry,) = [entry for entry in entries if entry["job_id"] == parent]
    assert parent_entry["children"] == children
    for entry in entries:
        if entry["job_id"] != parent:
            assert entry["parent_id"] == parent
    info = await served.status(children[0])
    assert info.parent_id == parent
    assert (await served.status(parent)).children == children


async def test_a_parent_that_never_succeeds_submits_no_child(served: AsyncClient) -> None:
    parent = await served.submit("spawner", gid="GID-P", payload={"children": 2, "fail_times": 9}, max_attempts=2)
    got = await served.wait(parent, timeout=30)
    assert got.outcome == "dead_lettered"
    assert [entry["job_id"] for entry in await _entries(served)] == [parent]
    assert await served.count_jobs() == 1  # the dead letter itself, and no child


async def test_a_swarm_of_1000_with_20_failures_gets_exactly_one_follow_up_that_sees_them_all(
    served: AsyncClient,
) -> None:
    specs = [{"agent": "pass_or_fail", "gid": "GID-S", "payload": {"n": n, "fail": n % 50 == 7}} for n in range(1000)]
    submitted = await served.submit_many(
        specs, swarm=True, then={"agent": "aggregate", "gid": "GID-AGG", "payload": {"report": "weekly"}}
    )
    assert submitted.follow_up is not None and submitted.swarm_id is not None
    got = await served.wait(submitted.follow_up, timeout=120)
    assert got.ok, got.error
    assert got.result == {
        "follows": submitted.swarm_id,
        "members": 1000,
        "outcomes": {"succeeded": 980, "dead_lettered": 20},
        "payload": {"report": "weekly"},
    }
    entries = await _entries(served)
    assert len(entries) == 1001
    follow_ups = [entry for entry in entries if entry.get("follows") == submitted.swarm_id]
    assert [entry["job_id"] for entry in follow_ups] == [submitted.follow_up]
    # the follow-up comes after every member in the ledger: it was submitted by the last one's commit
    assert entries[-1]["job_id"] == submitted.follow_up
    progress = await served.swarm_progress(submitted.swarm_id)
    assert progress is not None
    assert (progress.size, progress.ended, progress.follow_up) == (1000, 1000, submitted.follow_up)


async def test_a_follow_up_for_all_succeeded_is_recorded_skipped_when_a_member_failed(served: AsyncClient) -> None:
    specs = [{"agent": "pass_or_fail", "gid": "GID-S", "payload": {"n": n, "fail": n == 1}} for n in range(3)]
    submitted = await served.submit_many(
        specs, swarm=True, then={"agent": "aggregate", "gid": "GID-AGG"}, then_when="all_succeeded"
    )
    assert submitted.follow_up is not None
    got = await served.wait(submitted.follow_up, timeout=30)
    assert got.outcome == "cancelled" and got.error is not None
    assert got.error["type"] == "Skipped"
    assert "1 of the 3 members" in got.error["message"]
    assert got.run_s is None  # its handler never ran


async def test_fail_fast_follow_up_sees_what_was_cancelled(served: AsyncClient) -> None:
    specs: list[dict[str, Any]] = [{"agent": "pass_or_fail", "gid": "GID-S", "payload": {"n": 0, "fail": True}}]
    specs += [{"agent": "slow", "gid": "GID-S", "payload": {"seconds": 30}, "delay": 60} for _ in range(3)]
    submitted = await served.submit_many(
        specs, swarm=True, fail_fast=True, then={"agent": "aggregate", "gid": "GID-AGG"}
    )
    assert submitted.follow_up is not None
    got = await served.wait(submitted.follow_up, timeout=30)
    assert got.ok
    assert got.result["outcomes"] == {"dead_lettered": 1, "cancelled": 3}


async def test_a_three_stage_pipeline_runs_end_to_end(served: AsyncClient) -> None:
    # stage 1: a producer's swarm of 4, whose follow-up (stage 2) fans out a swarm of 3 whose
    # follow-up (stage 3) aggregates
    stage3 = {"agent": "aggregate", "gid": "GID-3", "payload": {"stage": 3}}
    stage2 = {"agent": "fan_out", "gid": "GID-2", "payload": {"width": 3, "then": stage3}}
    submitted = await served.submit_many(
        [{"agent": "echo", "gid": "GID-1", "payload": {"n": n}} for n in range(4)], swarm=True, then=stage2
    )
    assert submitted.follow_up is not None
    second = await served.wait(submitted.follow_up, timeout=30)
    assert second.ok
    third = await served.wait(second.result["follow_up"], timeout=30)
    assert third.ok
    assert third.result == {
        "follows": second.result["swarm_id"],
        "members": 3,
        "outcomes": {"succeeded": 3},
        "payload": {"stage": 3},
    }
    assert len(await _entries(served)) == 4 + 1 + 3 + 1


async def test_an_unknown_follow_up_agent_is_refused_and_writes_nothing(served: AsyncClient) -> None:
    await served.submit("echo", gid="GID-0")  # the daemon has published its agents by now
    with pytest.raises(UnknownAgentError) as refused:
        await served.submit_many(
            [{"agent": "echo", "gid": "GID-1"}], swarm=True, then={"agent": "no_such_agent", "gid": "GID-1"}
        )
    assert "no_such_agent" in str(refused.value)
    with pytest.raises(JobValidationError, match="only a swarm has a follow-up"):
        await served.submit_many([{"agent": "echo", "gid": "GID-1"}], then={"agent": "echo", "gid": "GID-1"})
    with pytest.raises(JobValidationError, match="then_when"):
        await served.submit_many(
            [{"agent": "echo", "gid": "GID-1"}], swarm=True, then={"agent": "echo", "gid": "G"}, then_when="sometimes"
        )
    with pytest.raises(JobValidationError, match=r"then\.gid"):
        await served.submit_many([{"agent": "echo", "gid": "GID-1"}], swarm=True, then={"agent": "echo", "gid": "!"})
    assert await served.count_jobs() <= 1  # only the first echo, if it has not run yet


async def test_children_of_a_committed_parent_run_once_after_a_kill_9_before_they_start(
    stack: Stack, tmp_path: Path
) -> None:
    marker = tmp_path / "starts"
    marker.touch()
    daemon = stack.daemon().start()
    async with stack.client() as client:
        parent = await client.submit(
            "spawner",
            gid="GID-P",
            payload={"children": 3, "agent": "record_start", "child": {"marker": str(marker)}, "delay": 4},
        )
        assert (await client.wait(parent, timeout=30)).ok
        daemon.kill9()  # the children are committed, delayed, and none has started
        assert marker.read_text() == ""
        children = (await client.status(parent)).children
        assert children is not None and len(children) == 3
        with stack.daemon():
            results = await client.wait_many(children, timeout=60)
        assert all(result.ok for result in results)
    assert sorted(marker.read_text().splitlines()) == ["start attempt 1"] * 3
    async with stack.client() as client:
        ids = [str(entry.job_id) async for entry in client.iter_ledger()]
    assert sorted(ids) == sorted([parent, *children])


def _overwrite_body(stack: Stack, job_id: str, body: bytes) -> None:
    """Overwrite a queued job's stored body behind the daemon's back (a damaged state)."""
    if stack.kind == "sqlite":
        with contextlib.closing(sqlite3.connect(stack.state / "swarmd.db")) as conn, conn:
            assert conn.execute("UPDATE jobs SET body = ? WHERE id = ?", (body, job_id)).rowcount == 1
        return
    import redis  # noqa: PLC0415 - the backend's optional dependency

    with redis.Redis.from_url(stack.url) as client:
        assert client.hset(f"{{{stack.prefix}}}:q:default:job:{job_id}", "body", body) == 0  # overwritten, not added


async def test_a_member_whose_stored_body_is_damaged_still_ends_its_swarm(stack: Stack) -> None:
    """The damaged member is dead-lettered as malformed, and counts as ended: the follow-up runs."""
    async with stack.client() as client:
        submitted = await client.submit_many(
            [{"agent": "echo", "gid": f"GID-{i}", "payload": {"i": i}} for i in range(3)],
            swarm=True,
            then={"agent": "aggregate", "gid": "GID-AGG"},
        )
    damaged = submitted[0]
    _overwrite_body(stack, damaged, b'{"id": "x", "gid": 12')
    with stack.daemon():
        async with stack.client() as client:
            assert submitted.follow_up is not None
            follow_up = await client.wait(submitted.follow_up, timeout=30)
            assert follow_up.ok
            letter = await client.wait(damaged, timeout=30)
            assert letter.outcome == "dead_lettered"
            entries = await _entries(client)
    assert sorted(str(entry["job_id"]) for entry in entries) == sorted([*submitted, submitted.follow_up])
    (damaged_entry,) = [entry for entry in entries if entry["job_id"] == damaged]
    assert damaged_entry["swarm_id"] == submitted.swarm_id
