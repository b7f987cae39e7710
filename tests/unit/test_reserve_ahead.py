"""Jobs reserved ahead of free slots: how many, in what order, and what becomes of them.

In-process worker on a real SQLite file; the allowance policy is fixed where a test needs
jobs reserved ahead, so that events, not timing, decide what happens.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import msgspec
from support.worker import job, ledger, until, worker

from swarmd.config import Settings
from swarmd.queue.base import Reserved
from swarmd.queue.sqlite.backend import SqliteBackend
from swarmd.registry import AgentPolicy
from swarmd.runtime.reserve_ahead import MAX_WAIT, ROUND_TRIPS, ReservedAhead, ahead_allowance
from swarmd.runtime.worker import Worker


def test_the_allowance_covers_two_round_trips_at_the_recent_pace_and_never_more_than_the_cap() -> None:
    # 1,000 jobs/s over the last 0.1 s; a reservation takes 10 ms: 2 round trips = 20 jobs
    assert ROUND_TRIPS == 2.0
    assert ahead_allowance(100, 0.1, 0.01, cap=1000) == 20
    assert ahead_allowance(100, 0.1, 0.01, cap=5) == 5
    # Long jobs (one ended in the last second; 1 ms round trips): nothing reserved ahead
    assert ahead_allowance(1, 1.0, 0.001, cap=1000) == 0
    assert ahead_allowance(0, 0.1, 0.01, cap=1000) == 0
    assert ahead_allowance(100, 0.1, 0.01, cap=0) == 0  # reserve_ahead = 0 turns it off
    assert ahead_allowance(100, 0.0, 0.01, cap=1000) == 0


def _reserved(job_id: str, handle: str = "") -> Reserved:
    return Reserved(job_id, None, 1, handle=handle)


def test_jobs_reserved_ahead_leave_oldest_first_and_a_new_reservation_replaces_an_old_one() -> None:
    ahead = ReservedAhead()
    for job_id in ("a", "b", "c"):
        ahead.add(_reserved(job_id, handle="first"), 1.0)
    ahead.add(_reserved("a", handle="second"), 2.0)  # reserved again: the queue knows only this one
    assert list(ahead) == ["b", "c", "a"] and len(ahead) == 3
    assert ahead.pop("c") is not None and ahead.pop("c") is None
    reserved, wall = ahead.pop_oldest()
    assert reserved.job_id == "b"
    reserved, wall = ahead.pop_oldest()
    assert (reserved.job_id, reserved.handle, wall) == ("a", "second", 2.0)
    assert not ahead and ahead.longest_wait() == 0.0


def _fixed(n: int) -> Any:
    return lambda ended, window_s, round_trip_s, cap: n


async def _saturated_with_three_ahead(w: Worker, backend: SqliteBackend, blocker_running: asyncio.Event) -> list[str]:
    """One slot, held by a blocker; three echo jobs reserved ahead of it. Returns their ids."""
    w.pacing.policy = _fixed(3)
    await backend.submit([job("block")])
    await blocker_running.wait()
    ids = await backend.submit([job() for _ in range(3)])
    await until(lambda: _leased(backend, 4))
    assert w.in_flight == 1 and list(w._ahead) == ids
    return ids


async def _leased(backend: SqliteBackend, n: int) -> bool:
    return (await backend.counts())["leased"] == n


def _blocker() -> tuple[asyncio.Event, asyncio.Event, Any]:
    running, release = asyncio.Event(), asyncio.Event()

    async def block(ctx: Any, payload: Any) -> str:
        running.set()
        await release.wait()
        return "released"

    return running, release, (block, AgentPolicy())


async def test_a_freed_slot_starts_the_jobs_reserved_ahead_in_order_from_one_reservation(tmp_path: Path) -> None:
    running, release, block = _blocker()
    async with worker(tmp_path, {"block": block}, max_concurrent=1) as (backend, w):
        ids = await _saturated_with_three_ahead(w, backend, running)
        release.set()
        await until(lambda: _entries(backend, 4))
        entries = {entry["job_id"]: entry for entry in await ledger(backend)}
    ahead = [entries[job_id] for job_id in ids]
    assert {entry["outcome"] for entry in ahead} == {"succeeded"}
    # One reservation took all three while the slot was busy (reserving only for free slots,
    # each would have had its own, after the previous one ended); they ran one after another.
    assert len({entry["reserved_at"] for entry in ahead}) == 1
    assert [entry["started_at"] for entry in ahead] == sorted(entry["started_at"] for entry in ahead)


async def _entries(backend: SqliteBackend, n: int) -> bool:
    return len(await backend.ledger_entries()) == n


async def test_a_job_cancelled_while_reserved_ahead_is_recorded_cancelled_without_running(tmp_path: Path) -> None:
    running, release, block = _blocker()
    async with worker(tmp_path, {"block": block}, max_concurrent=1) as (backend, w):
        first, *rest = await _saturated_with_three_ahead(w, backend, running)
        assert await backend.cancel(first) == [first]  # leased: flagged for its holder
        await w._apply_cancel_requests()
        await until(lambda: _entries(backend, 1))
        [entry] = await ledger(backend)
        assert list(w._ahead) == rest and w.in_flight == 1
        release.set()
    assert (entry["job_id"], entry["outcome"], entry["error"]["message"]) == (
        first,
        "cancelled",
        "cancelled before it started",
    )
    assert "started_at" not in entry


async def test_a_drain_gives_jobs_reserved_ahead_back_to_the_queue_unrun(tmp_path: Path) -> None:
    running, _release, block = _blocker()  # never released: the drain cancels the blocker
    async with worker(tmp_path, {"block": block}, max_concurrent=1, grace_seconds=0) as (backend, w):
        ids = await _saturated_with_three_ahead(w, backend, running)
        w.stop()
        await until(lambda: _leased(backend, 0))
        assert not w._ahead
        rows = {
            job_id: (state, attempt)
            for job_id, state, attempt in backend.conn.execute("SELECT id, state, attempt FROM jobs").fetchall()
        }
    for job_id in ids:  # back in the queue, their first attempt unspent, nothing recorded
        assert rows[job_id] == ("ready", 0)
    assert all(entry["job_id"] not in ids for entry in await _ledger_after(tmp_path))


async def _ledger_after(state: Path) -> list[dict[str, Any]]:
    backend = SqliteBackend(state)
    await backend.open()
    try:
        return [msgspec.json.decode(entry.record) for entry in await backend.ledger_entries()]
    finally:
        await backend.close()


async def test_the_leases_of_jobs_reserved_ahead_are_renewed_with_the_running_ones(tmp_path: Path) -> None:
    running, release, block = _blocker()
    renewed: list[set[str]] = []
    async with worker(tmp_path, {"block": block}, max_concurrent=1, lease_seconds=1.0) as (backend, w):
        real_renew = backend.renew

        async def renew(job_ids: Collection[str], *, lease: float) -> None:
            renewed.append(set(job_ids))
            await real_renew(job_ids, lease=lease)

        backend.renew = renew  # type: ignore[method-assign]
        ids = await _saturated_with_three_ahead(w, backend, running)
        held = {*ids, *w.running}
        await until(lambda: _renewed(renewed, held))
        release.set()


async def _renewed(calls: list[set[str]], held: set[str]) -> bool:
    return any(held <= call for call in calls)


async def test_jobs_that_waited_too_long_ahead_go_back_to_the_queue_and_the_allowance_restarts(tmp_path: Path) -> None:
    """Fast jobs, then slow ones: the jobs the fast pace let in would wait behind the slow
    ones. After MAX_WAIT they go back to the queue, unspent, and nothing more is reserved ahead
    until a reservation measures the pace again (none can while the slot stays busy)."""
    running, release, block = _blocker()
    async with worker(tmp_path, {"block": block}, max_concurrent=1) as (backend, w):
        ids = await _saturated_with_three_ahead(w, backend, running)
        waiting_since = time.monotonic() - w._ahead.longest_wait()
        await until(lambda: _leased(backend, 1), timeout=MAX_WAIT + 5)
        assert time.monotonic() - waiting_since >= MAX_WAIT  # not before their time
        assert not w._ahead and w.pacing.allowance == 0
        rows = dict(backend.conn.execute("SELECT id, attempt FROM jobs WHERE state = 'ready'").fetchall())
        assert rows == dict.fromkeys(ids, 0)
        release.set()
        await until(lambda: _entries(backend, 4))  # and they run once the slot frees
        assert {entry["job_id"] for entry in await ledger(backend)} >= set(ids)


async def test_a_higher_concurrency_limit_starts_jobs_reserved_ahead_at_once(tmp_path: Path) -> None:
    running, release, block = _blocker()
    async with worker(tmp_path, {"block": block}, max_concurrent=1) as (backend, w):
        await _saturated_with_three_ahead(w, backend, running)
        w.reload(Settings(max_concurrent=4))
        await asyncio.sleep(0)  # one turn of the loop: no wait for a job to end or for the puller
        assert w.in_flight == 4 and not w._ahead
        release.set()
        await until(lambda: _entries(backend, 4))


async def test_a_cancel_reaches_both_runs_of_a_job_reserved_again_while_it_ran(tmp_path: Path) -> None:
    """Its lease lapsed and came back: the job runs here and waits ahead of a slot as well; a
    cancel request ends both, and the ledger records it once, cancelled."""
    running, _release, block = _blocker()  # cancelled, never released
    async with worker(tmp_path, {"block": block}, max_concurrent=1) as (backend, w):
        w.pacing.policy = _fixed(3)
        [job_id] = await backend.submit([job("block")])
        await running.wait()
        with sqlite3.connect(tmp_path / "swarmd.db") as side:  # as if its lease had been recovered
            side.execute("UPDATE jobs SET state = 'ready', owner = NULL WHERE id = ?", (job_id,))
        await backend.submit([job()])  # wakes the puller, which reserves both ahead of the slot
        await until(lambda: _waiting(w, 2))
        assert w.cancel_job(job_id)
        await until(lambda: _entries(backend, 2))  # it, and the echo job once the slot freed
        await until(lambda: _in_flight(w, 0))
        entries = [entry for entry in await ledger(backend) if entry["job_id"] == job_id]
    assert [entry["outcome"] for entry in entries] == ["cancelled"]


async def _waiting(w: Worker, n: int) -> bool:
    return len(w._ahead) == n


async def _in_flight(w: Worker, n: int) -> bool:
    return w.in_flight == n


async def test_a_reservation_asked_for_before_a_give_back_does_not_refill_the_waiting_jobs(tmp_path: Path) -> None:
    """Jobs waiting ahead go back while the next reservation is on its way: what it brings was
    asked for at the pace that has just proved stale, so it goes back too, not to wait again."""
    running, release, block = _blocker()
    asked, proceed, answered = asyncio.Event(), asyncio.Event(), asyncio.Event()
    hold = False
    async with worker(tmp_path, {"block": block}, max_concurrent=1) as (backend, w):
        real_reserve = backend.reserve

        async def reserve(limit: int, **options: Any) -> list[Reserved]:
            if not hold:
                return await real_reserve(limit, **options)
            asked.set()
            await proceed.wait()
            try:
                return await real_reserve(limit, **options)
            finally:
                answered.set()

        backend.reserve = reserve  # type: ignore[method-assign]
        w.pacing.policy = _fixed(6)
        await backend.submit([job("block")])
        await running.wait()
        first = await backend.submit([job() for _ in range(3)])
        await until(lambda: _waiting(w, 3))
        hold = True
        second = await backend.submit([job() for _ in range(3)])  # the puller asks for these...
        await asked.wait()
        await until(lambda: _waiting(w, 0), timeout=MAX_WAIT + 5)  # ...while the first go back
        hold = False
        proceed.set()
        await answered.wait()
        # What it brought (the second three, or the first ones again if their return was
        # committed before it ran) goes back as it comes, not after a MAX_WAIT of its own.
        await until(lambda: _leased(backend, 1), timeout=MAX_WAIT / 2)
        assert not w._ahead and w.pacing.allowance == 0
        rows = dict(backend.conn.execute("SELECT id, attempt FROM jobs WHERE state = 'ready'").fetchall())
        assert rows == dict.fromkeys([*first, *second], 0)
        release.set()
