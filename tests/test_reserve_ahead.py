"""Jobs reserved ahead of free slots: how many, in what order, and what becomes of them.

In-process worker on a real SQLite file; the allowance policy is fixed where a test needs
jobs reserved ahead, so that events, not timing, decide what happens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from pathlib import Path
from typing import Any

import msgspec
from test_worker_regressions import job, ledger, until, worker

from swarmd.backend import Reserved
from swarmd.registry import AgentPolicy
from swarmd.reserve_ahead import ROUND_TRIPS, ReservedAhead, ahead_allowance
from swarmd.sqlite_queue import SqliteBackend
from swarmd.worker import Worker


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
    assert not ahead


def _fixed(n: int) -> Any:
    return lambda ended, window_s, round_trip_s, cap: n


async def _saturated_with_three_ahead(w: Worker, backend: SqliteBackend, blocker_running: asyncio.Event) -> list[str]:
    """One slot, held by a blocker; three echo jobs reserved ahead of it. Returns their ids."""
    w.ahead_allowance = _fixed(3)
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
