"""One behavioural contract for every queue backend: SQLite (local) and Redis Streams (shared).

Each test runs against both: an SqliteBackend in the test's tmp_path and a RedisBackend on the
Redis at 127.0.0.1:6379 under a key prefix of its own (deleted afterwards). Redis tests skip
when no Redis answers, and fail instead with ``SWARMD_TEST_STRICT=1``. The tests at the end are
Redis-only: persistence check, several daemons on one ledger, lease takeover, wake-ups.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.backends import outcome_record
from support.services import require_redis, require_tool

from swarmd.errors import BackendUnavailable, JobNotFound, JobValidationError
from swarmd.ledger.records import OutcomeRecord
from swarmd.model import Job, SwarmPlan, new_job
from swarmd.queue.archiving import Selection, archive_ledger
from swarmd.queue.base import Disposition, Finish, JobFilter, QueueBackend, Reserved, WakeReason
from swarmd.queue.sqlite.backend import DB_NAME, SqliteBackend
from swarmd.runtime.statedir import StateLock
from swarmd.workflows import plan_follow_up

LEASE = 30.0


@dataclass
class Case:
    """How to open the backend under test (several instances share one store)."""

    kind: str
    tmp_path: Path
    url: str = ""
    prefix: str = ""

    def make(self, owner: str | None = None) -> QueueBackend:
        if self.kind == "sqlite":
            return SqliteBackend(self.tmp_path, owner=owner)
        from swarmd.queue.redis.backend import RedisBackend  # noqa: PLC0415 - redis-py is optional

        return RedisBackend(self.url, prefix=self.prefix, owner=owner)

    @contextlib.asynccontextmanager
    async def opened(self, owner: str | None = None) -> AsyncIterator[Any]:
        backend = self.make(owner)
        await backend.open()
        try:
            yield backend
        finally:
            await backend.close()

    async def corrupt(self, backend: Any, job_id: str, body: bytes) -> None:
        """Overwrite a queued job's stored body behind the backend's back."""
        if self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(self.tmp_path / DB_NAME)) as conn, conn:
                conn.execute("UPDATE jobs SET body = ? WHERE id = ?", (body, job_id))
        else:
            await backend.client.hset(backend.job_key(job_id), "body", body)


def _delete_keys(url: str, prefix: str) -> None:
    import redis  # noqa: PLC0415

    with redis.Redis.from_url(url) as client:
        keys = list(client.scan_iter(match=f"{{{prefix}}}:*", count=1000))
        if keys:
            client.unlink(*keys)


@contextlib.contextmanager
def _on_redis(tmp_path: Path) -> Iterator[Case]:
    """A Redis case under a prefix of its own, its keys deleted afterwards."""
    url = require_redis()
    prefix = f"swarmd-test-{os.urandom(5).hex()}"
    try:
        yield Case("redis", tmp_path, url, prefix)
    finally:
        _delete_keys(url, prefix)


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Case]:
    if request.param == "sqlite":
        yield Case("sqlite", tmp_path)
        return
    with _on_redis(tmp_path) as on_redis:
        yield on_redis


@pytest.fixture
def redis_case(tmp_path: Path) -> Iterator[Case]:
    with _on_redis(tmp_path) as on_redis:
        yield on_redis


def job(agent: str = "echo", gid: str = "gid-1", **fields: Any) -> Job:
    return new_job(agent=agent, gid=gid, payload={"n": 1}, **fields)


def done(reserved: Reserved, outcome: str = "succeeded", disposition: Disposition = Disposition.DONE) -> Finish:
    return Finish(reserved.job_id, disposition, record=outcome_record(reserved, outcome), handle=reserved.handle)


def dead(reserved: Reserved, error: str = '{"type": "Boom"}', cancel_swarm: str | None = None) -> Finish:
    finish = done(reserved, "dead_lettered", Disposition.DEAD)
    finish.error = error
    finish.cancel_swarm = cancel_swarm
    return finish


async def ledger_ids(backend: QueueBackend) -> list[str | None]:
    return [entry.job_id for entry in await backend.ledger_entries()]


# -- the contract ------------------------------------------------------------------------------
async def test_reserve_by_priority_then_fifo(case: Case) -> None:
    async with case.opened() as q:
        jobs = [job(priority=p) for p in (0, 5, 0, 5, -1, 0)]
        assert await q.submit(jobs) == [j.id for j in jobs]
        first = await q.reserve(2, lease=LEASE)
        rest = await q.reserve(10, lease=LEASE)
        order = [r.job_id for r in first + rest]
        assert order == [jobs[i].id for i in (1, 3, 0, 2, 5, 4)]
        assert await q.reserve(10, lease=LEASE) == []
        assert all(r.job is not None and r.job.id == r.job_id and r.error is None for r in first + rest)


async def test_delayed_job_is_not_reserved_before_not_before(case: Case) -> None:
    async with case.opened() as q:
        not_before = time.time() + 0.4
        delayed = job(not_before=not_before)
        await q.submit([delayed])
        assert await q.reserve(10, lease=LEASE) == []
        assert (await q.counts())["delayed"] == 1
        assert (await q.status(delayed.id)).state == "delayed"
        due = await q.next_due()
        assert due is not None and abs(due - not_before) < 1e-3
        await asyncio.sleep(max(0.0, not_before - time.time()) + 0.05)
        [reserved] = await q.reserve(10, lease=LEASE)
        assert reserved.job_id == delayed.id
        assert await q.next_due() is None


async def test_reservation_leases_the_job_and_counts_the_attempt(case: Case) -> None:
    async with case.opened() as q:
        j = job()
        await q.submit([j])
        [reserved] = await q.reserve(5, lease=LEASE)
        assert reserved.attempt == 1
        assert reserved.job is not None and reserved.job.attempt == 1
        assert (reserved.gid, reserved.agent) == (j.gid, j.agent)
        info = await q.status(j.id)
        assert (info.state, info.attempt) == ("leased", 1)
        assert await q.counts() == {"ready": 0, "delayed": 0, "leased": 1, "dead": 0}
        assert await q.reserve(5, lease=LEASE) == []


async def test_done_writes_exactly_one_entry_and_removes_the_job(case: Case) -> None:
    async with case.opened() as q:
        j = job()
        await q.submit([j])
        [reserved] = await q.reserve(1, lease=LEASE)
        report = await q.finish([done(reserved)])
        assert report.indices == {j.id: 0}
        assert report.ledger_index == 0
        assert await ledger_ids(q) == [j.id]
        assert await q.counts() == {"ready": 0, "delayed": 0, "leased": 0, "dead": 0}
        info = await q.status(j.id)
        assert (info.state, info.outcome, info.ledger_index, info.gid) == ("done", "succeeded", 0, j.gid)
        assert await q.reserve(5, lease=LEASE) == []
        assert (await q.verify()).ok


async def test_finishing_the_same_job_twice_writes_one_entry(case: Case) -> None:
    async with case.opened() as q:
        a, b = job(), job()
        await q.submit([a, b])
        ra, rb = await q.reserve(2, lease=LEASE)
        first = await q.finish([done(ra)])
        again = await q.finish([done(ra), done(rb), done(rb)])
        assert first.indices == {a.id: 0}
        assert again.indices == {a.id: 0, b.id: 1}
        assert again.ledger_index == 1
        assert await ledger_ids(q) == [a.id, b.id]
        assert (await q.verify()).ok


async def test_retry_comes_back_later_with_the_attempt_spent(case: Case) -> None:
    async with case.opened() as q:
        j = job()
        await q.submit([j])
        [reserved] = await q.reserve(1, lease=LEASE)
        not_before = time.time() + 0.3
        report = await q.finish([Finish(j.id, Disposition.RETRY, not_before=not_before, handle=reserved.handle)])
        assert report.indices == {}
        assert await ledger_ids(q) == []
        assert await q.reserve(1, lease=LEASE) == []
        assert (await q.counts())["delayed"] == 1
        info = await q.status(j.id)
        assert (info.state, info.attempt) == ("delayed", 1)
        await asyncio.sleep(max(0.0, not_before - time.time()) + 0.05)
        [again] = await q.reserve(1, lease=LEASE)
        assert (again.job_id, again.attempt) == (j.id, 2)


async def test_release_refunds_the_attempt(case: Case) -> None:
    async with case.opened() as q:
        j = job()
        await q.submit([j])
        [reserved] = await q.reserve(1, lease=LEASE)
        await q.finish([Finish(j.id, Disposition.RELEASE, not_before=0.0, handle=reserved.handle)])
        info = await q.status(j.id)
        assert (info.state, info.attempt) == ("ready", 0)
        assert (await q.counts())["ready"] == 1
        [again] = await q.reserve(1, lease=LEASE)
        assert (again.job_id, again.attempt) == (j.id, 1)


async def test_excluded_agents_are_not_reserved_and_spend_no_attempt(case: Case) -> None:
    async with case.opened() as q:
        slow, fast = job(agent="slow"), job(agent="fast")
        await q.submit([slow, fast])
        reserved = await q.reserve(10, lease=LEASE, exclude_agents={"slow"})
        assert [r.job_id for r in reserved] == [fast.id]
        info = await q.status(slow.id)
        assert (info.state, info.attempt) == ("ready", 0)
        [later] = await q.reserve(10, lease=LEASE)
        assert (later.job_id, later.attempt) == (slow.id, 1)


async def test_a_backlog_of_an_excluded_agent_does_not_starve_the_others(case: Case) -> None:
    async with case.opened() as q:
        blocked = [job(agent="slow") for _ in range(300)]
        fast = job(agent="fast")
        await q.submit([*blocked, fast])
        got: list[Reserved] = []
        for _ in range(2):
            got += await q.reserve(1, lease=LEASE, exclude_agents={"slow"})
        assert [r.job_id for r in got] == [fast.id]
        assert (await q.counts())["ready"] == 300
        assert {i.job_id for i in await q.list_jobs("ready", 1000)} == {j.id for j in blocked}
        cancelled = blocked.pop(5)
        assert await q.cancel(job_id=cancelled.id) == [cancelled.id]
        later = await q.reserve(1000, lease=LEASE)
        assert [r.job_id for r in later] == [j.id for j in blocked]  # FIFO kept among them
        assert all(r.attempt == 1 for r in later)


async def test_dead_letter_then_requeue_as_a_new_reservable_job(case: Case) -> None:
    async with case.opened() as q:
        j = job()
        await q.submit([j])
        [reserved] = await q.reserve(1, lease=LEASE)
        report = await q.finish([dead(reserved, error='{"type": "Boom"}')])
        assert report.indices == {j.id: 0}
        [letter] = await q.dead_letters(10)
        assert (letter.job_id, letter.state, letter.error, letter.attempt) == (j.id, "dead", {"type": "Boom"}, 1)
        assert await q.counts() == {"ready": 0, "delayed": 0, "leased": 0, "dead": 1}
        [(old, new)] = await q.requeue(j.id)
        assert old == j.id and new != j.id
        assert await q.dead_letters(10) == []
        [again] = await q.reserve(1, lease=LEASE)
        assert (again.job_id, again.attempt) == (new, 1)
        assert again.job is not None and (again.job.gid, again.job.payload) == (j.gid, j.payload)
        with pytest.raises(JobNotFound):
            await q.requeue(j.id)
        assert await q.requeue(None, all_dead=True) == []


async def test_a_dead_letter_shows_the_outcome_and_index_of_its_ledger_entry(case: Case) -> None:
    async with case.opened() as q:
        first, j = job(), job(swarm_id="swarm-dl", swarm_size=1)
        await q.submit([first])
        [reserved] = await q.reserve(1, lease=LEASE)
        await q.finish([done(reserved)])
        await q.submit([j])
        [reserved] = await q.reserve(1, lease=LEASE)
        await q.finish([dead(reserved, error='{"type": "Boom", "message": "no"}')])
        expected = ("dead", "dead_lettered", 1, {"type": "Boom", "message": "no"})
        status = await q.status(j.id)
        [member] = await q.swarm_status("swarm-dl")
        [letter] = await q.dead_letters(10)
        [listed] = await q.list_jobs("dead", 10)
        for info in (status, member, letter, listed):
            assert (info.state, info.outcome, info.ledger_index, info.error) == expected


async def test_purge_dead(case: Case) -> None:
    async with case.opened() as q:
        jobs = [job(), job()]
        await q.submit(jobs)
        reserved = await q.reserve(2, lease=LEASE)
        await q.finish([dead(r) for r in reserved])
        assert await q.purge_dead(3600) == 0
        assert len(await q.dead_letters(10)) == 2
        assert await q.purge_dead(0) == 2
        assert await q.dead_letters(10) == []
        assert (await q.counts())["dead"] == 0
        assert len(await ledger_ids(q)) == 2  # the ledger keeps their entries


async def test_cancel_queued_writes_the_ledger_and_leased_is_flagged(case: Case) -> None:
    async with case.opened(owner="worker-a") as q, case.opened(owner="worker-b") as other:
        running, queued = job(), job()
        await q.submit([running, queued])
        [reserved] = await q.reserve(1, lease=LEASE)
        assert reserved.job_id == running.id
        assert await q.cancel(job_id=queued.id) == [queued.id]
        info = await q.status(queued.id)
        assert (info.state, info.outcome) == ("done", "cancelled")
        assert await ledger_ids(q) == [queued.id]
        assert await q.cancel(job_id=running.id) == [running.id]
        assert await q.cancel_requested() == [running.id]
        assert await other.cancel_requested() == []
        assert (await q.status(running.id)).state == "leased"
        with pytest.raises(JobNotFound):
            await q.cancel(job_id="no-such-job")
        with pytest.raises(JobNotFound):
            await q.cancel(swarm_id="no-such-swarm")
        assert await q.cancel(job_id=queued.id) == []  # known, already finished
        await q.finish([done(reserved, "cancelled")])
        assert await q.cancel_requested() == []
        assert (await q.verify()).ok


async def test_fail_fast_finish_cancels_the_swarm(case: Case) -> None:
    async with case.opened() as q:
        swarm = [job(swarm_id="swarm-1", swarm_size=4, fail_fast=True) for _ in range(4)]
        await q.submit(swarm)
        failing, sibling = await q.reserve(2, lease=LEASE)
        report = await q.finish([dead(failing, cancel_swarm="swarm-1")])
        queued = {swarm[2].id, swarm[3].id}
        assert set(report.cancelled) == queued | {sibling.job_id}
        assert report.indices == {failing.job_id: 0}
        assert report.ledger_index == 2
        entries = await q.ledger_entries()
        assert entries[0].job_id == failing.job_id
        assert {e.job_id for e in entries[1:]} == queued
        assert {e.decoded()["outcome"] for e in entries[1:]} == {"cancelled"}
        assert all(e.decoded()["swarm_id"] == "swarm-1" for e in entries)
        assert await q.cancel_requested() == [sibling.job_id]
        assert await q.reserve(10, lease=LEASE) == []
        await q.finish([done(sibling, "cancelled")])
        infos = await q.swarm_status("swarm-1")
        assert len(infos) == 4  # one line per member
        states = {info.job_id: (info.state, info.outcome) for info in infos}
        assert states[sibling.job_id] == ("done", "cancelled")
        assert states[failing.job_id] == ("dead", "dead_lettered")  # still a dead letter, with its entry's outcome
        assert {states[job_id] for job_id in queued} == {("done", "cancelled")}
        assert (await q.verify()).ok
        with pytest.raises(JobNotFound):
            await q.swarm_status("no-such-swarm")


async def test_idempotency_key_returns_the_first_id(case: Case) -> None:
    async with case.opened() as q:
        first, second = job(idempotency_key="order-42"), job(idempotency_key="order-42")
        assert await q.submit([first]) == [first.id]
        assert await q.submit([second]) == [first.id]
        third, fourth = job(idempotency_key="k2"), job(idempotency_key="k2")
        assert await q.submit([third, fourth]) == [third.id, third.id]
        assert (await q.counts())["ready"] == 2
        with pytest.raises(JobNotFound):
            await q.status(second.id)


async def test_a_duplicate_job_id_is_refused(case: Case) -> None:
    async with case.opened() as q:
        j = job()
        await q.submit([j])
        with pytest.raises(JobValidationError):
            await q.submit([new_job(agent="other", gid="gid-2", job_id=j.id)])
        assert (await q.counts())["ready"] == 1


async def test_recover_takes_only_expired_leases_never_renewed_ones(case: Case) -> None:
    async with case.opened(owner="worker-a") as a, case.opened(owner="worker-b") as b:
        kept, lost = job(), job()
        await a.submit([kept, lost])
        [ra] = await a.reserve(1, lease=0.3)
        [rb] = await b.reserve(1, lease=0.3)
        assert (ra.job_id, rb.job_id) == (kept.id, lost.id)
        assert await a.recover(all_leases=False) == 0
        await a.renew([kept.id], lease=LEASE)
        await asyncio.sleep(0.45)
        assert await a.recover(all_leases=False) == 1
        assert (await a.status(kept.id)).state == "leased"
        info = await a.status(lost.id)
        assert (info.state, info.attempt) == ("ready", 1)
        [again] = await a.reserve(5, lease=LEASE)
        assert (again.job_id, again.attempt) == (lost.id, 2)
        assert await a.recover(all_leases=False) == 0


async def test_counts_and_listings_by_state(case: Case) -> None:
    async with case.opened() as q:
        ready = [job(priority=2), job(priority=1), job(priority=0)]
        later = job(not_before=time.time() + 60)
        await q.submit([*ready, later])
        leased, dying = await q.reserve(2, lease=LEASE)
        await q.finish([dead(dying)])
        assert await q.counts() == {"ready": 1, "delayed": 1, "leased": 1, "dead": 1}
        assert [i.job_id for i in await q.list_jobs("ready", 10)] == [ready[2].id]
        assert [i.job_id for i in await q.list_jobs("delayed", 10)] == [later.id]
        assert [i.job_id for i in await q.list_jobs("leased", 10)] == [leased.job_id]
        assert [i.job_id for i in await q.list_jobs("dead", 10)] == [dying.job_id]
        everything = await q.list_jobs(None, 10)
        assert [i.job_id for i in everything] == [ready[0].id, ready[1].id, ready[2].id, later.id]
        assert [i.state for i in everything] == ["leased", "dead", "ready", "delayed"]
        assert len(await q.list_jobs(None, 2)) == 2


async def test_listings_and_counts_filter_by_agent_gid_and_swarm(case: Case) -> None:
    async with case.opened() as q:
        a1, a2 = job("alpha", "g-1"), job("alpha", "g-2", not_before=time.time() + 60)
        b1 = job("beta", "g-1", swarm_id="sw-f", swarm_size=2)
        b2 = job("beta", "g-3", swarm_id="sw-f", swarm_size=2, priority=5)
        await q.submit([a1, a2, b1, b2])

        async def listed(**fields: Any) -> list[str]:
            return [i.job_id for i in await q.list_jobs(None, 10, JobFilter(**fields))]

        assert await listed(agent="alpha") == [a1.id, a2.id]
        assert await listed(gid="g-1") == [a1.id, b1.id]
        assert await listed(swarm_id="sw-f") == [b2.id, b1.id]
        assert await listed(agent="alpha", state="delayed") == [a2.id]
        assert await listed(agent="beta", gid="g-3") == [b2.id]
        assert await listed(agent="nobody") == []
        assert await q.count_jobs(JobFilter()) == 4
        assert await q.count_jobs(JobFilter(agent="alpha")) == 2
        assert await q.count_jobs(JobFilter(state="ready")) == 3
        assert await q.count_jobs(JobFilter(state="ready", gid="g-1")) == 2
        assert len(await q.list_jobs(None, 1, JobFilter(gid="g-1"))) == 1


async def test_cancel_matching_cancels_queued_flags_running_and_spares_the_rest(case: Case) -> None:
    async with case.opened() as q:
        running, queued, later = job("alpha", priority=9), job("alpha"), job("alpha", not_before=time.time() + 60)
        other, dying = job("beta"), job("alpha", priority=10)
        await q.submit([running, queued, later, other, dying])
        dead_one, leased = await q.reserve(2, lease=LEASE)
        assert (dead_one.job_id, leased.job_id) == (dying.id, running.id)
        await q.finish([dead(dead_one)])
        assert await q.cancel_matching(JobFilter(agent="alpha", state="delayed")) == [later.id]
        assert sorted(await q.cancel_matching(JobFilter(agent="alpha"))) == sorted([queued.id, running.id])
        assert await q.cancel_requested() == [running.id]
        assert [i.job_id for i in await q.list_jobs(None, 10)] == [dying.id, running.id, other.id]
        cancelled = {e.job_id: e.decoded()["outcome"] for e in await q.ledger_entries() if e.job_id != dying.id}
        assert cancelled == {later.id: "cancelled", queued.id: "cancelled"}
        assert await q.cancel_matching(JobFilter(state="dead")) == []
        assert await q.cancel_matching(JobFilter(agent="nobody")) == []
        assert (await q.verify()).ok


async def test_an_undecodable_body_comes_back_with_its_error(case: Case) -> None:
    async with case.opened() as q:
        j = job(gid="gid-7", agent="summarize")
        await q.submit([j])
        await case.corrupt(q, j.id, b'{"id": "x", "gid": 12')
        [reserved] = await q.reserve(1, lease=LEASE)
        assert reserved.job is None
        assert reserved.error is not None and "invalid job" in reserved.error
        assert (reserved.job_id, reserved.gid, reserved.agent, reserved.attempt) == (j.id, "gid-7", "summarize", 1)
        await q.finish([dead(reserved, error=reserved.error)])
        [letter] = await q.dead_letters(5)
        assert letter.error == {"message": reserved.error}  # plain text kept as a message
        assert (await q.verify()).ok


def _swarm_with_follow_up(swarm: str, size: int) -> tuple[list[Job], SwarmPlan]:
    """``size`` members of ``swarm`` and the plan of its follow-up (an ``echo`` job)."""
    members = [job(swarm_id=swarm, swarm_size=size) for _ in range(size)]
    then = {"agent": "echo", "gid": "gid-then"}
    plan = plan_follow_up(then, swarm_id=swarm, size=size, then_when="always", traceparent=None, now=time.time())
    return members, plan


async def test_an_undecodable_member_still_ends_its_swarm(case: Case) -> None:
    """Its dead letter counts as the member's end (the swarm as stored comes back with it), so
    the swarm ends and its follow-up is submitted instead of awaiting forever."""
    swarm = "sw-undecodable"
    members, plan = _swarm_with_follow_up(swarm, 2)
    async with case.opened() as q:
        await q.submit(members, [plan])
        await case.corrupt(q, members[0].id, b'{"id": "x", "gid": 12')
        reserved = {r.job_id: r for r in await q.reserve(2, lease=LEASE)}
        bad, good = reserved[members[0].id], reserved[members[1].id]
        assert bad.job is None and bad.swarm_id == swarm
        assert good.job is not None and good.swarm_id is None  # a decodable job names its swarm itself
        finished = done(good)
        finished.swarm_id, finished.outcome = swarm, "succeeded"
        first = await q.finish([finished])
        assert first.swarms_ended == [] and (await q.status(plan.then.id)).state == "awaiting"
        letter = dead(bad, error=bad.error or "")
        letter.swarm_id, letter.outcome = bad.swarm_id, "dead_lettered"  # as the worker's refusal does
        last = await q.finish([letter])
        assert last.swarms_ended == [swarm] and last.submitted == [plan.then.id]
        assert (await q.status(plan.then.id)).state == "ready"


async def test_a_pending_follow_up_holds_archiving_at_its_swarms_first_member(case: Case) -> None:
    """From its swarm's first ended member until its own entry is written, a follow-up keeps its
    swarm's outcomes live: archiving stops before them (`archive_hold`), then goes on."""
    swarm = "sw-held"
    members, plan = _swarm_with_follow_up(swarm, 2)

    def member_done(reserved: Reserved) -> Finish:
        finish = done(reserved)
        finish.swarm_id, finish.outcome = swarm, "succeeded"
        return finish

    async with case.opened() as q:
        await q.submit([job(), job()])
        await q.finish([done(r) for r in await q.reserve(2, lease=LEASE)])  # entries 0 and 1
        await q.submit(members, [plan])
        assert await q.archive_hold() is None  # no member has ended
        leased = {r.job_id: r for r in await q.reserve(2, lease=LEASE)}
        await q.finish([member_done(leased[members[0].id])])  # entry 2
        assert await q.archive_hold() == 2
        await q.submit([job(), job()])
        await q.finish([done(r) for r in await q.reserve(2, lease=LEASE)])  # entries 3 and 4
        held = await archive_ledger(q, Selection(keep=0), None)
        assert (held.entries, held.held_at) == (2, 2) and "held before index 2" in held.summary()
        report = await q.finish([member_done(leased[members[1].id])])  # entry 5: the swarm ends
        assert report.submitted == [plan.then.id]
        assert await q.archive_hold() == 2  # its follow-up is queued, not recorded
        assert [entry.job_id for entry in await q.swarm_outcomes(swarm)] == [m.id for m in members]
        [follow_up] = await q.reserve(1, lease=LEASE)
        assert follow_up.job_id == plan.then.id
        await q.finish([done(follow_up)])  # entry 6
        assert await q.archive_hold() is None
        rest = await archive_ledger(q, Selection(keep=0), None)
        assert (rest.entries, rest.held_at) == (5, None)
        assert (await q.verify()).ok


async def test_ledger_reads_and_verify_after_a_mix(case: Case) -> None:
    async with case.opened() as q:
        jobs = [job(swarm_id="s", fail_fast=True) if i == 9 else job() for i in range(10)]
        await q.submit(jobs)
        reserved = await q.reserve(6, lease=LEASE)
        await q.finish([done(r) for r in reserved[:3]])
        await q.finish(
            [
                dead(reserved[3]),
                Finish(reserved[4].job_id, Disposition.RETRY, handle=reserved[4].handle),
                Finish(reserved[5].job_id, Disposition.RELEASE, handle=reserved[5].handle),
            ]
        )
        await q.cancel(job_id=jobs[6].id)
        await q.requeue(reserved[3].job_id)
        await q.finish([done(reserved[0])])
        rest = await q.reserve(10, lease=LEASE)
        await q.finish([done(r) for r in rest])
        entries = await q.ledger_entries()
        assert [e.index for e in entries] == list(range(len(entries)))
        ids = [e.job_id for e in entries]
        assert len(ids) == len(set(ids)) == 11  # 10 jobs + the requeued copy
        report = await q.verify()
        assert report.ok and report.entries == 11 and report.last_index == 10
        assert report.last_hash == entries[-1].hash
        assert [e.index for e in await q.ledger_tail(3)] == [8, 9, 10]
        assert [e.index for e in await q.ledger_entries(4, 2)] == [4, 5]
        assert await q.ledger_tail(0) == []
        assert await q.counts() == {"ready": 0, "delayed": 0, "leased": 0, "dead": 0}


async def test_published_agents(case: Case) -> None:
    async with case.opened() as q:
        assert await q.published_agents() is None
        await q.publish_agents(["sleep", "echo", "echo"])
        assert await q.published_agents() == ["echo", "sleep"]


async def test_daemon_serving_tells_whether_a_daemon_holds_the_queue(case: Case) -> None:
    async with case.opened() as q:
        assert await q.daemon_serving() is False
        if case.kind == "redis":  # a daemon publishes its agents at its start
            await q.publish_agents(["echo"])
            assert await q.daemon_serving() is True
            return
        lock = StateLock(case.tmp_path)  # a daemon holds an exclusive flock on the state dir itself
        lock.acquire()
        try:
            assert await q.daemon_serving() is True
        finally:
            lock.release()
        assert await q.daemon_serving() is False


# -- Redis only --------------------------------------------------------------------------------
@pytest.mark.redis
async def test_redis_check_persistence_reports_the_volatile_local_server(redis_case: Case) -> None:
    import redis  # noqa: PLC0415

    with redis.Redis.from_url(redis_case.url) as client:
        appendonly = client.config_get("appendonly").get("appendonly")
    async with redis_case.opened() as q:
        reason = await q.check_persistence()
    if appendonly == "no":
        assert reason is not None and "appendonly no" in reason
    else:
        assert reason is None


@contextlib.contextmanager
def private_redis(tmp_path: Path, *options: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of our own on a unix socket in tmp_path (no TCP port), killed by its pid."""
    pytest.importorskip("redis")
    server = require_tool("redis-server")  # fails instead of skipping with SWARMD_TEST_STRICT=1
    sock = tmp_path / "redis.sock"
    proc = subprocess.Popen(
        [
            server,
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--unixsocketperm",
            "700",
            "--dir",
            str(tmp_path),
            "--save",
            "",
            *options,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)
        yield f"unix://{sock}", proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


@pytest.mark.redis
@pytest.mark.slow
async def test_redis_check_persistence_accepts_an_aof_server(tmp_path: Path) -> None:
    from swarmd.queue.redis.backend import RedisBackend  # noqa: PLC0415

    with private_redis(tmp_path, "--appendonly", "yes") as (url, _):
        backend = RedisBackend(url, prefix="aof")
        await backend.open()
        try:
            assert await backend.check_persistence() is None
        finally:
            await backend.close()


@pytest.mark.redis
@pytest.mark.slow
async def test_redis_paused_is_unavailable_fast_and_nothing_is_recorded_twice(tmp_path: Path) -> None:
    from swarmd.queue.redis.backend import RedisBackend  # noqa: PLC0415

    with private_redis(tmp_path) as (url, proc):
        q = RedisBackend(url, prefix="pause", socket_timeout=1.0)
        await q.open()
        try:
            jobs = [job() for _ in range(3)]
            await q.submit(jobs)
            first, *rest = await q.reserve(3, lease=LEASE)
            await q.finish([done(first)])
            os.kill(proc.pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                with pytest.raises(BackendUnavailable):
                    await q.finish([done(r) for r in rest])  # may run once Redis resumes
                assert time.monotonic() - started < 3.0
            finally:
                os.kill(proc.pid, signal.SIGCONT)
            report = await q.finish([done(r) for r in rest])  # the worker's retry of the same batch
            assert report.indices == {rest[0].job_id: 1, rest[1].job_id: 2}
            assert await ledger_ids(q) == [j.id for j in jobs]
            assert (await q.verify()).ok
            assert await q.counts() == {"ready": 0, "delayed": 0, "leased": 0, "dead": 0}
        finally:
            await q.close()


async def test_redis_unreachable_is_backend_unavailable() -> None:
    pytest.importorskip("redis")
    from swarmd.queue.redis.backend import RedisBackend  # noqa: PLC0415

    backend = RedisBackend("redis://127.0.0.1:1/0", socket_timeout=1.0)
    with pytest.raises(BackendUnavailable, match=r"127\.0\.0\.1:1"):
        await backend.open()


@pytest.mark.redis
async def test_redis_all_leases_takes_only_its_own_owners_live_leases(redis_case: Case) -> None:
    async with redis_case.opened(owner="host-a") as a, redis_case.opened(owner="host-b") as b:
        mine, theirs = job(), job()
        await a.submit([mine, theirs])
        await a.reserve(1, lease=LEASE)
        await b.reserve(1, lease=LEASE)
        async with redis_case.opened(owner="host-a") as restarted:  # the same owner name, a new life
            assert await restarted.recover(all_leases=True) == 1
            assert (await restarted.status(mine.id)).state == "ready"
            assert (await restarted.status(theirs.id)).state == "leased"


@pytest.mark.redis
async def test_redis_a_taken_over_reservation_cannot_send_the_job_back(redis_case: Case) -> None:
    async with redis_case.opened(owner="host-a") as a, redis_case.opened(owner="host-b") as b:
        j = job()
        await a.submit([j])
        [stale] = await a.reserve(1, lease=0.2)
        await asyncio.sleep(0.3)
        assert await b.recover(all_leases=False) == 1
        [current] = await b.reserve(1, lease=LEASE)
        assert current.attempt == 2
        await a.renew([j.id], lease=LEASE)  # not a's lease any more: no effect
        await a.finish([Finish(j.id, Disposition.RETRY, not_before=0.0, handle=stale.handle)])
        assert (await b.status(j.id)).state == "leased"
        assert await a.reserve(1, lease=LEASE) == []
        await b.finish([done(current)])
        await a.finish([done(stale)])  # the stale run finishing too: still one entry
        assert await ledger_ids(a) == [j.id]


async def test_wait_for_work_wakes_at_once_on_submit_and_on_cancel_requests(case: Case) -> None:
    async with case.opened() as worker, case.opened() as producer:
        await worker.listen()
        assert await worker.reserve(1, lease=LEASE) == []
        started = time.monotonic()
        waiting = asyncio.create_task(worker.wait_for_work(10.0))
        await asyncio.sleep(0.05)
        await producer.submit([job()])
        assert WakeReason.WORK in await asyncio.wait_for(waiting, 8.0)
        assert time.monotonic() - started < 8.0  # woken by the submit, not the 10 s timeout
        # a submit between an empty reserve and the wait is not lost
        [running] = await worker.reserve(5, lease=LEASE)
        await producer.submit([job()])
        assert WakeReason.WORK in await asyncio.wait_for(worker.wait_for_work(10.0), 1.0)
        # a cancel request for a running job wakes the worker with reason CANCEL
        await producer.cancel(running.job_id)
        reasons: set[WakeReason] = set()
        while WakeReason.CANCEL not in reasons:
            reasons |= await asyncio.wait_for(worker.wait_for_work(10.0), 2.0)
        assert await worker.cancel_requested() == [running.job_id]
        # nothing pending: it waits out its timeout and says so with no reason
        assert await worker.wait_for_work(0.05) == set()


@pytest.mark.redis
async def test_redis_several_daemons_share_one_gap_free_ledger(redis_case: Case) -> None:
    jobs = [job() for _ in range(600)]
    async with contextlib.AsyncExitStack() as stack:
        daemons = [await stack.enter_async_context(redis_case.opened(owner=f"d{i}")) for i in range(3)]
        await daemons[0].submit(jobs)

        async def drain(q: Any) -> None:
            while batch := await q.reserve(40, lease=LEASE):
                await asyncio.sleep(0)
                await q.finish([done(r) for r in batch])

        await asyncio.gather(*(drain(q) for q in daemons))
        entries = await daemons[0].ledger_entries()
        assert sorted(e.job_id or "" for e in entries) == sorted(j.id for j in jobs)
        assert [e.index for e in entries] == list(range(600))
        assert (await daemons[1].verify()).ok
        assert await daemons[2].counts() == {"ready": 0, "delayed": 0, "leased": 0, "dead": 0}


async def test_holds_published_by_a_daemon_are_read_back_and_replaced(case: Case) -> None:
    async with case.opened() as q:
        assert await q.holds() == {}
        await q.publish_holds({"fail": "circuit open", "gone": "not loaded"})
        assert await q.holds() == {"fail": "circuit open", "gone": "not loaded"}
        await q.publish_holds({})
        assert await q.holds() == {}


# -- waiting for outcomes (the results API's one backend method) -------------------------------
async def test_wait_finished_returns_at_once_for_a_finished_job_and_empty_on_timeout(case: Case) -> None:
    async with case.opened() as q:
        finished, unfinished = job(), job()
        await q.submit([finished, unfinished])
        reserved = {r.job_id: r for r in await q.reserve(2, lease=LEASE)}
        await q.finish([done(reserved[finished.id])])
        started = time.monotonic()
        found = await q.wait_finished([unfinished.id, finished.id], None, backstop=30.0)
        assert list(found) == [finished.id] and time.monotonic() - started < 10.0  # not the 30 s backstop
        assert found[finished.id].decoded()["outcome"] == "succeeded"
        started = time.monotonic()
        assert await q.wait_finished([unfinished.id], 0.2, backstop=30.0) == {}
        assert 0.2 <= time.monotonic() - started < 10.0  # its own timeout, not the 30 s backstop


async def test_a_waiter_is_woken_by_the_commit_of_the_outcome_not_by_polling(case: Case) -> None:
    """With the backstop look at 30 s, only the commit's notification can wake the waiter."""
    if case.kind == "sqlite":
        pytest.skip(
            "SQLite has no notifications of its own: its waiters are woken by the daemon, through its API socket "
            "(tests/integration/test_sqlite_waiters_are_woken_by_the_daemon.py)"
        )
    async with case.opened() as waiter, case.opened() as worker:
        j = job()
        await worker.submit([j])
        [reserved] = await worker.reserve(1, lease=LEASE)
        waiting = asyncio.create_task(waiter.wait_finished([j.id], 20.0, backstop=30.0))
        await _until_subscribed(worker, 1)
        await worker.finish([done(reserved)])
        # Within 5 s of the commit, far below the 30 s backstop: the notification woke it (how
        # soon is for `swarmd bench redis-e2e`, not for a test on a shared machine).
        found = await asyncio.wait_for(waiting, 5.0)
        assert list(found) == [j.id]
        # a waiter that goes away leaves nothing behind: its subscription is gone
        other = asyncio.create_task(waiter.wait_finished([job().id], None, backstop=30.0))
        await _until_subscribed(worker, 1)
        other.cancel()
        # Bounded: a cancel lost inside redis-py's get_message once left this waiter looking
        # at the ledger for minutes (pytest-timeout cannot interrupt a test blocked in uvloop).
        done_, _ = await asyncio.wait({other}, timeout=10.0)
        assert done_ == {other}, "a cancelled waiter did not end"
        with pytest.raises(asyncio.CancelledError):
            other.result()
        await _until_subscribed(worker, 0)


async def _until_subscribed(backend: Any, count: int) -> None:
    """Until exactly ``count`` clients subscribe to the finish notifications (deadline 5 s)."""
    deadline = time.monotonic() + 5.0
    while True:
        [(_, subscribers)] = await backend.client.pubsub_numsub(backend.finished_channel)
        if subscribers == count:
            return
        assert time.monotonic() < deadline, f"{subscribers} subscribers, expected {count}"
        await asyncio.sleep(0.005)


async def test_a_failures_traceback_survives_the_round_trip(case: Case) -> None:
    traceback = 'Traceback (most recent call last):\n  File "a.py", line 1, in <module>\nValueError: é ✓ "quoted"\n'
    error = {"type": "ValueError", "message": "é ✓", "traceback": traceback}
    async with case.opened() as q:
        j = job()
        await q.submit([j])
        [reserved] = await q.reserve(1, lease=LEASE)
        finish = dead(reserved, error=json.dumps(error))
        record = OutcomeRecord(
            job_id=j.id,
            gid=j.gid,
            agent=j.agent,
            outcome="dead_lettered",
            attempt=1,
            finished_at=time.time(),
            error=error,
        ).encode()
        finish.record = record
        await q.finish([finish])
        [letter] = await q.dead_letters(10)
        found = await q.wait_finished([j.id], 1.0)
        assert (await q.status(j.id)).error == error
        assert letter.error == error
        assert found[j.id].decoded()["error"] == error
