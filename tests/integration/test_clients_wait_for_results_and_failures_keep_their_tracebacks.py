"""Issue 15: a producer waits for a job or a swarm and gets its results back, failures with their
tracebacks, on both backends, from a real `swarmd serve` subprocess.

Each test runs on SQLite (a state directory in tmp_path) and on the Redis at 127.0.0.1:6379
(a key prefix of its own, deleted afterwards). Every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from support.stacks import Stack, stack

from swarmd import AsyncClient, Client, JobFailed, JobNotFound, JobResult, WaitTimeout

pytestmark = pytest.mark.slow
__all__ = ["stack"]  # the fixture, on both backends


@pytest.fixture
async def served(stack: Stack) -> AsyncIterator[AsyncClient]:
    """A running daemon and a client of its queue."""
    with stack.daemon():
        async with stack.client() as client:
            yield client


async def test_wait_gives_the_result_of_a_job_that_succeeds_and_result_its_value(served: AsyncClient) -> None:
    job = await served.submit("echo", gid="GID-1", payload={"hello": "world"})
    got = await job.wait(timeout=30)
    assert isinstance(got, JobResult) and got.ok
    assert (got.job_id, got.outcome, got.result, got.error, got.attempts) == (
        job,
        "succeeded",
        {"hello": "world"},
        None,
        1,
    )
    assert got.ledger_index >= 0 and got.run_s is not None and got.identity_violation is None
    assert await served.result(job, timeout=30) == {"hello": "world"}
    # a waiter started after the job finished returns at once
    started = time.monotonic()
    assert await served.wait(job, timeout=30) == got
    assert time.monotonic() - started < 10  # at once, not at its 30 s timeout


async def test_a_failure_comes_back_with_its_traceback(served: AsyncClient) -> None:
    job = await served.submit("raises_deep", gid="GID-2")
    got = await served.wait(job, timeout=30)
    assert got.outcome == "dead_lettered" and not got.ok
    assert got.error is not None
    assert (got.error["type"], got.error["message"]) == ("ValueError", "deep failure of GID-2")
    traceback = got.error["traceback"]
    assert traceback.startswith("Traceback (most recent call last):")
    assert "in _innermost" in traceback and traceback.rstrip().endswith("ValueError: deep failure of GID-2")
    with pytest.raises(JobFailed) as failed:
        await job.result(timeout=30)
    assert failed.value.result == got
    # the same error (traceback included) in status and among the dead letters
    assert (await served.status(job)).error == got.error
    [letter] = [info for info in await served.dead_letters() if info.job_id == job]
    assert letter.error == got.error


async def test_a_job_that_retries_then_succeeds_gives_its_last_attempt(served: AsyncClient) -> None:
    job = await served.submit("flaky", gid="GID-3", payload={"fail_times": 1}, max_attempts=3)
    got = await served.wait(job, timeout=30)
    assert (got.outcome, got.attempts, got.result) == ("succeeded", 2, {"agent_gid": "GID-3", "attempt": 2})


async def test_a_cancelled_job_and_a_dead_letter_raise_job_failed(served: AsyncClient) -> None:
    later = await served.submit("echo", gid="GID-4", delay=3600)
    waiting = asyncio.create_task(served.wait(later, timeout=30))
    await served.cancel(later)
    cancelled = await waiting
    assert cancelled.outcome == "cancelled" and cancelled.error is not None
    dead = await served.submit("permanent", gid="GID-5")
    with pytest.raises(JobFailed) as failed:
        await served.result(dead, timeout=30)
    assert failed.value.result.outcome == "dead_lettered"
    assert failed.value.result.error is not None and failed.value.result.error["type"] == "Permanent"


async def test_a_wait_times_out_with_wait_timeout_and_an_unknown_id_is_not_found_at_once(served: AsyncClient) -> None:
    job = await served.submit("slow", gid="GID-6", payload={"seconds": 3600})
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as timed_out:
        await served.wait(job, timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 3
    assert isinstance(timed_out.value, TimeoutError) and timed_out.value.job_ids == [job]
    started = time.monotonic()
    with pytest.raises(JobNotFound):
        await served.wait("0" * 32, timeout=30)
    assert time.monotonic() - started < 10  # at once, not at its 30 s timeout
    await served.cancel(job)


async def test_wait_swarm_gives_results_in_submit_order_after_a_fail_fast_failure(served: AsyncClient) -> None:
    specs = [{"agent": "slow", "gid": f"G{i}", "payload": {"seconds": 3600}} for i in range(3)]
    specs.insert(1, {"agent": "permanent", "gid": "G-FAIL"})
    swarm = await served.submit_many(specs, swarm=True, fail_fast=True)
    assert swarm.swarm_id is not None
    results = await served.wait_swarm(swarm.swarm_id, timeout=30)
    assert [r.job_id for r in results] == swarm.job_ids == list(swarm)
    assert [r.outcome for r in results] == ["cancelled", "dead_lettered", "cancelled", "cancelled"]
    assert await swarm.wait(timeout=5) == results
    with pytest.raises(JobFailed):
        await swarm.results(timeout=5)


async def test_as_completed_yields_each_member_exactly_once(served: AsyncClient) -> None:
    swarm = await served.submit_many(
        [{"agent": "sleep", "gid": f"G{i}", "payload": {"seconds": 0.01 * (i % 4)}} for i in range(20)], swarm=True
    )
    assert swarm.swarm_id is not None
    seen = [r.job_id async for r in served.as_completed(swarm.swarm_id, timeout=30)]
    assert sorted(seen) == sorted(swarm) and len(seen) == len(set(seen))
    again = [r async for r in swarm.as_completed(timeout=5)]
    assert sorted(r.job_id for r in again) == sorted(swarm)
    assert [r.ledger_index for r in again] == sorted(r.ledger_index for r in again)  # as recorded


async def test_a_result_over_max_result_bytes_fails_with_result_too_large(stack: Stack) -> None:
    limit = 64 * 1024
    with stack.daemon() as daemon:
        async with stack.client() as client:
            fits = await client.submit("sized_result", gid="GID-7", payload={"bytes": limit})
            too_large = await client.submit("sized_result", gid="GID-8", payload={"bytes": limit + 1})
            assert len(await client.result(fits, timeout=30)) == limit - 2
            got = await client.wait(too_large, timeout=30)
            assert got.outcome == "dead_lettered" and got.result is None and got.error is not None
            assert got.error["type"] == "ResultTooLarge" and got.error["permanent"] is True
            assert f"{limit + 1} bytes" in got.error["message"] and f"({limit} bytes)" in got.error["message"]
            status = await client.status(too_large)
            assert status.error is not None and status.error["type"] == "ResultTooLarge"
            [entry] = await client.ledger(got.ledger_index, 1)
            assert entry.decoded()["error"]["type"] == "ResultTooLarge" and "result" not in entry.decoded()
        samples = daemon.metrics()
        failed = sum(v for k, v in samples.items() if k.startswith("swarmd_jobs_total{") and 'outcome="failed"' in k)
        assert failed == 1


async def test_a_client_waiting_through_a_kill_9_gets_the_result_after_the_restart(stack: Stack) -> None:
    daemon = stack.daemon().start()
    async with stack.client(backstop=0.2) as client:
        job = await client.submit("slow", gid="GID-9", payload={"seconds": 1.5})
        deadline = time.monotonic() + 30
        while (await client.status(job)).state != "leased":
            assert time.monotonic() < deadline, "the job never started"
            await asyncio.sleep(0.02)
        waiting = asyncio.create_task(client.wait(job, timeout=60))
        daemon.kill9()
        assert not waiting.done()
        daemon.start()
        got = await waiting
        assert got.outcome == "succeeded" and got.attempts == 2
    daemon.stop()


async def test_a_waiter_whose_daemon_never_comes_back_times_out_cleanly(stack: Stack) -> None:
    daemon = stack.daemon().start()
    async with stack.client(backstop=0.2) as client:
        job = await client.submit("slow", gid="GID-10", payload={"seconds": 3600})
        deadline = time.monotonic() + 30
        while (await client.status(job)).state != "leased":
            assert time.monotonic() < deadline, "the job never started"
            await asyncio.sleep(0.02)
        daemon.kill9()
        started = time.monotonic()
        with pytest.raises(WaitTimeout):
            await client.wait(job, timeout=1.0)
        assert 1.0 <= time.monotonic() - started < 4
    # (the test's own task and the runner task of anyio's pytest plugin aside)
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and "anyio" not in repr(t)]
    assert tasks == [], f"the wait left tasks behind: {tasks}"


async def test_the_blocking_client_waits_the_same_way(stack: Stack) -> None:
    """`Client` (its own loop, in a thread here: this test's loop must not block) waits and
    returns the same results through what submit and submit_many return."""
    with stack.daemon():
        await asyncio.to_thread(_blocking_waits, stack)


def _blocking_waits(stack: Stack) -> None:
    with Client(stack.state, settings=stack.settings()) as client:
        job = client.submit("echo", gid="GID-11", payload=[1, 2])
        assert isinstance(job, str) and job.result(timeout=30) == [1, 2]
        assert client.wait(job).outcome == "succeeded"
        swarm = client.submit_many([{"agent": "echo", "gid": f"G{i}", "payload": i} for i in range(5)], swarm=True)
        assert swarm.results(timeout=30) == [0, 1, 2, 3, 4]
        assert swarm.swarm_id is not None
        assert [r.result for r in client.wait_swarm(swarm.swarm_id, timeout=30)] == [0, 1, 2, 3, 4]
        assert sorted(r.result for r in client.as_completed(swarm.swarm_id, timeout=30)) == [0, 1, 2, 3, 4]
        with pytest.raises(JobFailed):
            client.result(client.submit("permanent", gid="GID-12"), timeout=30)
