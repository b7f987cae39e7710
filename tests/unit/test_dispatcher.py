"""The report's eleven behaviours of AsyncSwarmDispatcher, each asserting what it names."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

import pytest

from swarmd import (
    AgentTask,
    AsyncSwarmDispatcher,
    DurableLedger,
    LedgerEntryError,
    LedgerError,
    SharedLedger,
    get_gid,
)
from swarmd.identity import current_gid


def gid_reporter(gid: str) -> Any:
    async def fn() -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"agent_gid": get_gid(), "expected": gid}

    return fn


async def test_single_agent_keeps_its_gid() -> None:
    d = AsyncSwarmDispatcher(max_concurrent=1)
    [result] = await d.dispatch([AgentTask(gid="GID-01", fn=gid_reporter("GID-01"))])
    assert result.ok
    assert result.value == {"agent_gid": "GID-01", "expected": "GID-01"}
    assert result.identity_violation is None
    assert d.metrics.identity_preservation_violations == 0


async def test_many_agents_keep_their_gids_including_spawned_tasks() -> None:
    async def spawns(gid: str) -> dict[str, Any]:
        # A task the handler spawns sees the same GID.
        child = await asyncio.create_task(asyncio.sleep(0, result=get_gid()))
        return {"agent_gid": child}

    tasks = [AgentTask(gid=f"GID-{i:02}", fn=functools.partial(spawns, f"GID-{i:02}")) for i in range(30)]
    results = await AsyncSwarmDispatcher(max_concurrent=7).dispatch(tasks)
    assert [r.value["agent_gid"] for r in results] == [f"GID-{i:02}" for i in range(30)]
    assert all(r.identity_violation is None for r in results)


@pytest.mark.parametrize("kind", ["memory", "durable"])
async def test_five_concurrent_writers_times_ten_get_indices_0_to_49(kind: str, tmp_path: Path) -> None:
    ledger: SharedLedger | DurableLedger = SharedLedger() if kind == "memory" else DurableLedger(tmp_path / "l.db")
    start = asyncio.Event()

    async def writer(w: int) -> list[int]:
        await start.wait()
        out = []
        for n in range(10):
            out.append(await ledger.append({"agent_gid": f"GID-{w}", "n": n}))
            await asyncio.sleep(0)
        return out

    tasks = [asyncio.create_task(writer(w)) for w in range(5)]
    start.set()
    indices = sorted(i for written in await asyncio.gather(*tasks) for i in written)
    assert indices == list(range(50))
    assert (await ledger.verify()).ok
    await ledger.close()


async def test_entry_missing_agent_gid_is_refused_and_writes_nothing() -> None:
    ledger = SharedLedger()
    with pytest.raises(LedgerEntryError, match="agent_gid"):
        await ledger.append({"outcome": "succeeded"})
    with pytest.raises(LedgerEntryError, match="agent_gid"):
        await ledger.append({"agent_gid": ""})
    assert len(ledger) == 0
    assert await ledger.append({"agent_gid": "GID-1"}) == 0


async def test_fifty_agent_swarm_reaches_concurrent_peak_fifty() -> None:
    # A barrier proves all 50 run at once (deterministic), then each sleeps 10 ms.
    barrier = asyncio.Barrier(50)

    async def agent_fn() -> str:
        await barrier.wait()
        await asyncio.sleep(0.01)
        return "done"

    d = AsyncSwarmDispatcher(max_concurrent=50)
    results = await d.dispatch([AgentTask(gid=f"G{i}", fn=agent_fn) for i in range(50)])
    assert [r.value for r in results] == ["done"] * 50
    assert d.metrics.concurrent_peak == 50
    assert d.metrics.completed_tasks == 50
    assert d.metrics.scheduling_overhead_s >= 0


async def test_concurrency_limit_is_never_exceeded() -> None:
    running = 0
    seen_max = 0

    async def agent_fn() -> None:
        nonlocal running, seen_max
        running += 1
        seen_max = max(seen_max, running)
        for _ in range(3):
            await asyncio.sleep(0)
        running -= 1

    d = AsyncSwarmDispatcher(max_concurrent=4)
    await d.dispatch([AgentTask(gid=f"G{i}", fn=agent_fn) for i in range(40)])
    assert seen_max == 4
    assert d.metrics.concurrent_peak == 4


async def test_hundred_agent_stress_swarm_completes() -> None:
    d = AsyncSwarmDispatcher(max_concurrent=100, fail_fast=False)
    results = await d.dispatch(
        [AgentTask(gid=f"G{i}", fn=functools.partial(asyncio.sleep, 0.001, i)) for i in range(100)]
    )
    assert [r.value for r in results] == list(range(100))
    assert d.metrics.completed_tasks == 100 and d.metrics.failed_tasks == 0


async def test_fail_fast_propagates_and_cancels_siblings() -> None:
    started = asyncio.Event()
    cancelled: list[int] = []

    async def sibling(i: int) -> None:
        try:
            started.set()
            await asyncio.Event().wait()  # would run forever
        except asyncio.CancelledError:
            cancelled.append(i)
            raise

    async def boom() -> None:
        await started.wait()
        raise RuntimeError("boom")

    ledger = SharedLedger()
    d = AsyncSwarmDispatcher(max_concurrent=10, fail_fast=True, ledger=ledger)
    tasks = [AgentTask(gid=f"G{i}", fn=functools.partial(sibling, i)) for i in range(5)]
    tasks.append(AgentTask(gid="G-bad", fn=boom))
    with pytest.raises(ExceptionGroup) as info:
        await d.dispatch(tasks)
    assert [type(e) for e in info.value.exceptions] == [RuntimeError]
    assert sorted(cancelled) == [0, 1, 2, 3, 4]
    assert d.metrics.failed_tasks == 1 and d.metrics.cancelled_tasks == 5
    outcomes = sorted(e.decoded()["outcome"] for e in ledger.entries())
    assert outcomes == ["cancelled"] * 5 + ["failed"]


async def test_without_fail_fast_every_task_runs_and_reports() -> None:
    async def bad() -> None:
        raise ValueError("nope")

    d = AsyncSwarmDispatcher(max_concurrent=3, fail_fast=False)
    results = await d.dispatch(
        [AgentTask(gid="A", fn=lambda: asyncio.sleep(0, result=1)), AgentTask(gid="B", fn=bad, name="bad")]
    )
    assert results[0].ok and results[0].value == 1
    assert not results[1].ok and isinstance(results[1].exception, ValueError)
    assert results[1].name == "bad"
    assert d.metrics.completed_tasks == 1 and d.metrics.failed_tasks == 1 and d.metrics.total_tasks == 2


async def test_empty_task_list_returns_empty_and_records_nothing() -> None:
    ledger = SharedLedger()
    d = AsyncSwarmDispatcher(ledger=ledger)
    assert await d.dispatch([]) == []
    assert d.metrics.total_tasks == 0 and d.metrics.task_durations == []
    assert len(ledger) == 0


async def test_metrics_count_tasks_completions_failures_and_durations() -> None:
    gate = asyncio.Event()

    async def slow() -> str:
        await gate.wait()
        return "slow"

    async def opener() -> None:
        gate.set()
        raise KeyError("x")

    d = AsyncSwarmDispatcher(max_concurrent=5, fail_fast=False)
    results = await d.dispatch([AgentTask(gid="A", fn=slow), AgentTask(gid="B", fn=opener)])
    m = d.metrics
    assert (m.total_tasks, m.completed_tasks, m.failed_tasks) == (2, 1, 1)
    assert len(m.task_durations) == 2
    assert m.task_durations == [r.duration_s for r in results]
    assert all(d >= 0 for d in m.task_durations)
    assert m.scheduling_overhead_s == pytest.approx(m.wall_time_s - max(m.task_durations))


async def test_identity_violation_is_counted_marked_and_does_not_crash() -> None:
    async def liar() -> dict[str, str]:
        return {"agent_gid": "SOMEONE-ELSE"}

    async def rebinder() -> None:
        current_gid.set("HIJACKED")

    d = AsyncSwarmDispatcher(fail_fast=True)
    results = await d.dispatch(
        [
            AgentTask(gid="A", fn=liar),
            AgentTask(gid="B", fn=rebinder),
            AgentTask(gid="C", fn=gid_reporter("C")),
        ]
    )
    assert d.metrics.identity_preservation_violations == 2
    assert results[0].identity_violation is not None and "SOMEONE-ELSE" in results[0].identity_violation
    assert results[1].identity_violation is not None and "HIJACKED" in results[1].identity_violation
    assert results[2].identity_violation is None
    assert all(r.ok for r in results)


async def test_twenty_agent_full_lifecycle_with_durable_ledger(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = DurableLedger(path)
    d = AsyncSwarmDispatcher(max_concurrent=20, fail_fast=False, ledger=ledger)
    results = await d.dispatch(
        [AgentTask(gid=f"GID-{i:02}", fn=gid_reporter(f"GID-{i:02}"), name=f"a{i}") for i in range(20)]
    )
    assert sorted(r.ledger_index for r in results if r.ledger_index is not None) == list(range(20))
    await ledger.close()

    reopened = DurableLedger(path)
    report = await reopened.verify()
    entries = await reopened.entries()
    await reopened.close()
    assert report.ok and report.entries == 20
    assert sorted(e.decoded()["agent_gid"] for e in entries) == [f"GID-{i:02}" for i in range(20)]
    assert {e.decoded()["outcome"] for e in entries} == {"succeeded"}


async def test_bad_arguments_are_refused_before_anything_runs() -> None:
    with pytest.raises(ValueError, match="max_concurrent"):
        AsyncSwarmDispatcher(max_concurrent=0)
    with pytest.raises(ValueError, match=r"tasks\[0\]\.gid"):
        await AsyncSwarmDispatcher().dispatch([AgentTask(gid="", fn=gid_reporter(""))])


class _GatedLedger(SharedLedger):
    """Entries are committed only when the test opens the gate (tasks must not wait for it)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.queued = 0

    def append_soon(self, entry: Any) -> asyncio.Future[int]:
        self.queued += 1

        async def commit() -> int:
            await self.gate.wait()
            return await self.append(entry)

        return asyncio.ensure_future(commit())


async def test_tasks_end_before_their_entries_commit_and_dispatch_waits_for_every_commit() -> None:
    ledger = _GatedLedger()
    d = AsyncSwarmDispatcher(max_concurrent=5, ledger=ledger)
    ended: list[int] = []

    def worker(i: int) -> Any:
        async def fn() -> int:
            await asyncio.sleep(0)
            ended.append(i)
            return i

        return fn

    dispatch = asyncio.ensure_future(d.dispatch([AgentTask(gid=f"GID-{i}", fn=worker(i)) for i in range(10)]))
    for _ in range(1000):  # every task ends with its entry queued, none committed
        if ledger.queued == 10:
            break
        await asyncio.sleep(0)
    assert ledger.queued == 10
    assert sorted(ended) == list(range(10)) and len(ledger) == 0
    assert not dispatch.done()
    ledger.gate.set()
    results = await dispatch
    assert sorted(r.ledger_index for r in results if r.ledger_index is not None) == list(range(10))
    assert (await ledger.verify()).ok


class _AppendOnlyLedger:
    """A third-party ledger with only the protocol's ``append``."""

    def __init__(self) -> None:
        self.inner = SharedLedger()

    async def append(self, entry: Any) -> int:
        return await self.inner.append(entry)

    async def verify(self) -> Any:
        return await self.inner.verify()

    async def close(self) -> None:
        return None


async def test_a_ledger_with_append_only_still_gets_every_entry() -> None:
    ledger = _AppendOnlyLedger()
    results = await AsyncSwarmDispatcher(ledger=ledger).dispatch(
        [AgentTask(gid=f"GID-{i}", fn=gid_reporter(f"GID-{i}")) for i in range(6)]
    )
    assert sorted(r.ledger_index for r in results if r.ledger_index is not None) == list(range(6))
    assert len(ledger.inner) == 6


class _FailingLedger(SharedLedger):
    """Every other commit fails."""

    def append_soon(self, entry: Any) -> asyncio.Future[int]:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if entry["task"].endswith(("1", "3")):
            future.set_exception(LedgerError("disk on fire"))
        else:
            future.set_result(self._append(entry))
        return future


async def test_a_failed_commit_fails_the_dispatch_after_every_entry_was_awaited() -> None:
    ledger = _FailingLedger()
    d = AsyncSwarmDispatcher(fail_fast=False, ledger=ledger)
    tasks = [AgentTask(gid=f"GID-{i}", fn=gid_reporter(f"GID-{i}"), name=f"t{i}") for i in range(5)]
    with pytest.raises(LedgerError, match="disk on fire"):
        await d.dispatch(tasks)
    assert len(ledger) == 3  # t0, t2, t4 committed; the task-side work all finished
    assert d.metrics.completed_tasks == 5
    assert d.metrics.wall_time_s > 0  # the dispatch's metrics are complete all the same


async def test_a_failed_swarm_whose_entries_fail_to_commit_reports_both() -> None:
    async def boom() -> None:
        raise ValueError("task failed")

    d = AsyncSwarmDispatcher(fail_fast=True, ledger=_FailingLedger())
    tasks = [AgentTask(gid=f"GID-{i}", fn=boom if i == 1 else gid_reporter(f"GID-{i}"), name=f"t{i}") for i in range(3)]
    with pytest.raises(BaseExceptionGroup) as caught:
        await d.dispatch(tasks)
    assert caught.group_contains(ValueError, match="task failed")
    assert caught.group_contains(LedgerError, match="disk on fire")
