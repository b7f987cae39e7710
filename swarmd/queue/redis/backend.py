"""The shared queue: Redis Streams, for several daemons on several hosts.

`RedisBackend` implements `QueueBackend` with one Lua script per state change (`scripts.py`), so a
daemon killed at any point leaves a consistent queue; the ledger is a Redis list appended by the
same script that acknowledges a job. The key layout, and why the chain hash is computed in Python
and checked optimistically in Lua, are in docs/design/redis-backend.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import socket
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import msgspec
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from swarmd.errors import ArchiveError, BackendUnavailable, ConfigError, JobNotFound, JobValidationError
from swarmd.ledger.chain import GENESIS_HASH, Anchor, StoredEntry, VerifyReport, chain_hash, verify
from swarmd.ledger.records import OutcomeRecord
from swarmd.model import Job, JobState, SwarmPlan, UpkeepStep, decode_job, decode_reserved, encode_job, new_job_id
from swarmd.queue.base import (
    Disposition,
    Finish,
    FinishReport,
    JobFilter,
    JobInfo,
    Reserved,
    SwarmProgress,
    UpkeepObserver,
    WakeReason,
    error_object,
)
from swarmd.queue.redis.migrations import open_prefix
from swarmd.queue.redis.schedules import RECORD_TICK, states_from_hash
from swarmd.queue.redis.scripts import PRELUDE, SCRIPTS
from swarmd.queue.waiting import wait_for_entries
from swarmd.schedules import Schedule, ScheduleState
from swarmd.storage import horizon
from swarmd.storage.horizon import DEFAULT_HORIZON

_NAME: Final = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
#: Archived job ids: one set per generation, ``ledger:archived:<gen>``, named in a zset
#: (see the prelude of scripts.py and swarmd.storage.horizon).
_ARCHIVED: Final = "ledger:archived:"
_ARCHIVED_GENS: Final = "ledger:archived:gens"
#: Finish attempts before giving up on a contended ledger tail.
MAX_CAS_ATTEMPTS: Final = 64
#: Ledger entries read per round trip.
READ_BATCH: Final = 5000
#: Jobs one script cancels at a time in `cancel_matching`.
CANCEL_BATCH: Final = 500
#: A limit that lists every matching job (the `list` script scans that many ready ones at most).
_UNLIMITED: Final = 1 << 50
#: Consumers with nothing pending and idle this long are removed from the groups.
CONSUMER_IDLE_MS: Final = 3_600_000
PRUNE_EVERY: Final = 600.0
#: Seconds `RedisBackend.close` waits for its wake reader to end before closing the client under it.
CLOSE_WAIT: Final = 2.0


@dataclass(slots=True)
class _Member:
    """A queued job as `finish` plans its cancellation."""

    job_id: str
    state: str
    owner: str | None
    entry: str | None
    attempt: int
    gid: str
    agent: str
    swarm_id: str | None
    seq: int


def _raise_if_cancelling() -> None:
    """Raise CancelledError if this task was asked to stop: redis-py can swallow a cancel that
    arrives while it reads a reply (or turn it into a timeout), and a loop that called it would
    then run on after its owner cancelled it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _s(value: bytes | None) -> str | None:
    return None if value is None else value.decode()


def _pack(digest: str, prev: str, job_id: str | None, record: bytes) -> bytes:
    """A ledger entry as stored in the ``ledger`` list."""
    jid = b"" if job_id is None else job_id.encode()
    marker = b"ff" if job_id is None else b"%02x" % len(jid)
    return digest.encode() + prev.encode() + marker + jid + record


def _unpack(index: int, raw: bytes) -> StoredEntry:
    digest, prev, marker = raw[:64].decode(), raw[64:128].decode(), raw[128:130]
    if marker == b"ff":
        return StoredEntry(index, None, prev, digest, raw[130:])
    size = int(marker, 16)
    return StoredEntry(index, raw[130 : 130 + size].decode(), prev, digest, raw[130 + size :])


def _infos(raw: Sequence[bytes | None]) -> list[tuple[int, JobInfo]]:
    """Rows of the ``info_rows`` Lua helper: (seq, JobInfo)."""
    rows: list[tuple[int, JobInfo]] = []
    for i in range(0, len(raw), 10):
        job_id, state, agent, gid, attempt, priority, not_before, swarm_id, error, seq = raw[i : i + 10]
        rows.append(
            (
                int(seq or 0),
                JobInfo(
                    str(_s(job_id)),
                    JobState(str(_s(state))),
                    _s(agent) or "",
                    _s(gid) or "",
                    int(attempt or 0),
                    int(priority or 0),
                    float(not_before or 0.0),
                    _s(swarm_id),
                    error_object(error),
                ),
            )
        )
    return rows


def _list_args(where: JobFilter, state: str | None, limit: int) -> list[Any]:
    """The ``list`` script's arguments after Q and P: state, limit, then the filters."""
    return [where.state or state or "", limit, where.agent or "", where.gid or "", where.swarm_id or ""]


def _swarm_fields(jobs: Sequence[Job], plans: Sequence[SwarmPlan]) -> list[Any]:
    """The registrations of the swarms among ``jobs`` (see the scripts' ``register_swarm``),
    led by their number; the script counts each swarm's size from the members it creates."""
    sizes: dict[str, int] = {}
    for job in jobs:
        if job.swarm_id is not None:
            sizes[job.swarm_id] = sizes.get(job.swarm_id, 0) + 1
    then = {plan.swarm_id: plan.then for plan in plans}
    fields: list[Any] = [len(sizes)]
    for swarm_id, size in sizes.items():
        follow_up = then.get(swarm_id)
        fields.extend((swarm_id, size, "0" if follow_up is None else "1"))
        if follow_up is not None:
            fields.extend(_job_fields(follow_up))
    return fields


def _children_fields(items: Sequence[Finish]) -> list[Any]:
    """The finish script's children section: the jobs each finished job's handler submitted."""
    parents = [item for item in items if item.children]
    fields: list[Any] = [len(parents)]
    for item in parents:
        fields.extend((item.job_id, len(item.children)))
        for child in item.children:
            fields.extend(_job_fields(child))
        fields.extend(_swarm_fields(item.children, item.plans))
    return fields


def _job_fields(job: Job) -> list[Any]:
    return [
        job.id,
        job.idempotency_key or "",
        encode_job(job),
        job.agent,
        job.gid,
        str(job.priority),
        repr(float(job.not_before)),
        job.swarm_id or "",
        str(job.attempt),
    ]


class RedisBackend:
    """`QueueBackend` on Redis Streams (see the module docstring for the design).

    ``owner`` names this daemon as a stream consumer and in its leases (default
    ``host:pid:random``). ``allow_volatile`` is read by the daemon, not here.
    """

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "swarmd",
        queue: str = "default",
        owner: str | None = None,
        allow_volatile: bool = False,
        socket_timeout: float = 2.0,
    ) -> None:
        for what, value in (("prefix", prefix), ("queue", queue)):
            if not _NAME.fullmatch(value):
                raise ValueError(f"redis {what} {value!r} must match {_NAME.pattern}")
        self.url = url
        self.prefix = prefix
        self.queue = queue
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self.allow_volatile = allow_volatile
        self.socket_timeout = socket_timeout
        #: Finish attempts refused because another daemon moved the ledger tail first.
        self.cas_misses = 0
        self._p = f"{{{prefix}}}:"
        self._q = f"{self._p}q:{queue}:"
        self._client: Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._tail: tuple[int, str] | None = None
        self._contended = False
        self._held: set[str] = set()
        self._wake_seen: bytes | None = None
        self._wake_reasons: set[WakeReason] = set()
        self._wake_event = asyncio.Event()
        self._wake_reader: asyncio.Task[None] | None = None
        self._next_prune = 0.0
        #: Told of each housekeeping script and how long it took, round trip included (it holds
        #: the whole Redis server while it runs; see `QueueBackend.on_upkeep_step`).
        self.on_upkeep_step: UpkeepObserver | None = None

    @property
    def where(self) -> str:
        """The server, without credentials (for messages)."""
        parts = urlsplit(self.url)
        if parts.scheme == "unix":
            return f"unix:{parts.path}"
        return f"{parts.hostname}:{parts.port or 6379}{parts.path or ''}"

    def job_key(self, job_id: str) -> str:
        """The Redis key of a queued job's hash (for tools and tests)."""
        return f"{self._q}job:{job_id}"

    # -- plumbing --------------------------------------------------------------------------
    async def open(self) -> None:
        client = Redis.from_url(
            self.url,
            socket_timeout=self.socket_timeout,
            socket_connect_timeout=self.socket_timeout,
            health_check_interval=max(1, int(self.socket_timeout)),
            retry=Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.05), 3, supported_errors=(RedisConnectionError,)),
            client_name=f"swarmd:{re.sub(r'[^!-~]', '_', self.owner)}",
        )
        try:
            with self._guard("open"):
                info = await client.info("server")
        except ResponseError as exc:  # e.g. "DB index is out of range": the URL is wrong, not the server
            await client.aclose()
            raise ConfigError("redis_url", f"Redis at {self.where} refused the connection: {exc}") from None
        except BaseException:
            await client.aclose()
            raise
        version = tuple(int(part) for part in str(info.get("redis_version", "0")).split(".")[:2])
        if version < (6, 2):
            await client.aclose()
            raise BackendUnavailable(f"Redis at {self.where} is {info.get('redis_version')}; swarmd needs 6.2 or later")
        try:
            with self._guard("open"):
                await open_prefix(client, self._p, f"Redis at {self.where}, prefix {self.prefix!r}")
        except BaseException:
            await client.aclose()
            raise
        self._client = client
        self._scripts = {name: client.register_script(PRELUDE + body) for name, body in SCRIPTS.items()}

    async def close(self) -> None:
        if self._wake_reader is not None:
            reader, self._wake_reader = self._wake_reader, None
            reader.cancel()
            # Bounded: redis-py may swallow a cancel that lands while it reads (the reader then
            # raises it itself once the call returns, see _read_wakes); closing the client below
            # ends any read still blocked.
            await asyncio.wait({reader}, timeout=CLOSE_WAIT)
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    @property
    def client(self) -> Redis:
        if self._client is None:
            raise RuntimeError("backend is not open")
        return self._client

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        try:
            yield
        except (RedisConnectionError, RedisTimeoutError, ReadOnlyError) as exc:
            message = f"Redis at {self.where} unavailable ({what}): {type(exc).__name__}: {exc}"
            raise BackendUnavailable(message) from exc

    async def _eval(self, name: str, *args: Any) -> Any:
        script = self._scripts.get(name)
        if script is None:
            raise RuntimeError("backend is not open")
        with self._guard(name):
            return await script(keys=[self._q + "prios"], args=[self._q, self._p, *args])

    async def _upkeep_eval(self, step: UpkeepStep, name: str, *args: Any) -> Any:
        """`_eval` of a housekeeping script, timed around the call (`on_upkeep_step`)."""
        started = time.perf_counter()
        try:
            return await self._eval(name, *args)
        finally:
            observer = self.on_upkeep_step
            if observer is not None:
                observer(step.value, time.perf_counter() - started)

    async def check_persistence(self) -> str | None:
        """Why Redis would lose acknowledged work (None: AOF is on)."""
        with self._guard("check_persistence"):
            try:
                config = await self.client.config_get("appendonly")
            except ResponseError as exc:
                try:
                    info = await self.client.info("persistence")
                except ResponseError:
                    return (
                        f"cannot tell whether Redis at {self.where} persists its data: CONFIG GET is refused "
                        f"({exc}) and INFO persistence is unavailable"
                    )
                if str(info.get("aof_enabled")) == "1":
                    return None
                return (
                    f"Redis at {self.where} runs without AOF (INFO aof_enabled:0; CONFIG is refused): "
                    "acknowledged jobs and ledger entries are lost if it restarts"
                )
        value: Any = next(iter(config.values()), None) if config else None
        if isinstance(value, bytes):
            value = value.decode()
        if value == "yes":
            return None
        if value is None:
            return f"cannot tell whether Redis at {self.where} persists its data: CONFIG GET appendonly is empty"
        return (
            f"Redis at {self.where} has appendonly {value}: acknowledged jobs and ledger entries are lost "
            "if it restarts (enable AOF, or allow a volatile Redis explicitly)"
        )

    # -- producers -------------------------------------------------------------------------
    async def submit(self, jobs: Sequence[Job], plans: Sequence[SwarmPlan] = ()) -> list[str]:
        if not jobs:
            return []
        args: list[Any] = [len(jobs)]
        for job in jobs:
            args.extend(_job_fields(job))
        args.extend(_swarm_fields(jobs, plans))
        try:
            ids = await self._eval("submit", *args)
        except ResponseError as exc:
            message = str(exc)
            if message.startswith("DUPLICATE"):
                duplicate = message.rsplit(maxsplit=1)[-1]
                raise JobValidationError("id", f"a job with this id already exists ({duplicate})") from None
            if message.startswith("ARCHIVED"):
                archived = message.rsplit(maxsplit=1)[-1]
                reason = f"job {archived} already finished (its ledger entry is archived)"
                raise JobValidationError("id", reason) from None
            raise
        return [job_id.decode() for job_id in ids]

    # -- the worker ------------------------------------------------------------------------
    async def reserve(self, limit: int, *, lease: float, exclude_agents: Collection[str] = ()) -> list[Reserved]:
        if limit <= 0:
            return []
        excluded = sorted(exclude_agents)
        raw = await self._eval("reserve", self.owner, limit, repr(float(lease)), 2 * limit + 256, *excluded)
        self._wake_seen = raw[0]
        reserved: list[Reserved] = []
        for i in range(1, len(raw), 6):
            job_id, attempt, entry = raw[i].decode(), int(raw[i + 1]), raw[i + 2].decode()
            body, gid, agent = raw[i + 3], _s(raw[i + 4]) or "", _s(raw[i + 5]) or ""
            swarm_id: str | None = None
            try:
                job: Job | None = decode_reserved(body or b"", attempt)
                error = None
            except JobValidationError as exc:  # its swarm as stored, for its dead letter's count
                job, error = None, str(exc)
                with self._guard("reserve"):
                    stored: Any = await self.client.hget(self.job_key(job_id), "swarm_id")
                swarm_id = _s(stored) or None
            reserved.append(Reserved(job_id, job, attempt, error, gid, agent, swarm_id, handle=entry))
            self._held.add(job_id)
        return reserved

    async def listen(self) -> None:
        """Start the wake reader: a task that blocks on the ``wake`` stream (XREAD BLOCK from the
        last id seen) and sets an event, so that waiting for work is cheap to cancel."""
        if self._wake_reader is None:
            self._wake_reader = asyncio.get_running_loop().create_task(self._read_wakes(), name="swarmd-redis-wake")

    async def _read_wakes(self) -> None:
        key = self._q + "wake"
        block_ms = max(500, int((self.socket_timeout - 1.0) * 1000))  # shorter than the socket timeout
        while True:
            try:
                if self._wake_seen is None:
                    with self._guard("wait_for_work"):
                        newest: Any = await self.client.xrevrange(key, count=1)
                    self._wake_seen = newest[0][0] if newest else b"0-0"
                with self._guard("wait_for_work"):
                    found: Any = await self.client.xread({key: self._wake_seen}, count=64, block=block_ms)
            except BackendUnavailable:
                _raise_if_cancelling()  # a cancel redis-py turned into a timeout, or swallowed
                await asyncio.sleep(0.5)  # Redis away: the worker sees it too; keep trying
                continue
            _raise_if_cancelling()
            if found:
                entries = found[0][1]
                self._wake_seen = entries[-1][0]
                self._wake_reasons.update(WakeReason.from_wire(fields.get(b"r", b"w")) for _, fields in entries)
                self._wake_event.set()

    async def wait_for_work(self, timeout: float) -> set[WakeReason]:  # noqa: ASYNC109 - the protocol's bound, in seconds
        """Block until work may have arrived (a submit, a retry, a recovery, a cancel request)
        since the last call, or ``timeout`` seconds pass; return why (`WakeReason`).

        Every idle daemon wakes (the wake stream is a broadcast, unlike BLPOP), and nothing
        submitted in between is missed. Delayed jobs do not wake anyone: the caller bounds
        ``timeout`` by `next_due`. Without `listen`, it sleeps ``timeout``.
        """
        if self._wake_reader is None:
            await asyncio.sleep(timeout)
            return set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake_event.wait(), timeout)
        self._wake_event.clear()
        reasons, self._wake_reasons = self._wake_reasons, set()
        return reasons

    async def finish(self, items: Sequence[Finish]) -> FinishReport:
        if not items:
            return FinishReport()
        swarms = list(dict.fromkeys(item.cancel_swarm for item in items if item.cancel_swarm))
        report = await self._commit(items, [("swarm", swarm) for swarm in swarms], "fail_fast")
        for item in items:
            self._held.discard(item.job_id)
        return report

    async def _commit(self, items: Sequence[Finish], groups: list[tuple[str, str]], reason: str) -> FinishReport:
        """Finish ``items`` and cancel ``groups`` in one script, re-planned until the CAS holds."""
        now = time.time()
        members = {group: await self._members(*group) for group in groups}
        known: dict[str, int] = {}
        # Alone, the tail the last commit returned is still the tail; once peers are seen
        # committing in between, a small read before planning saves re-sending a whole batch.
        tail = self._tail if self._tail is not None and not self._contended else await self._read_tail()
        self._contended = False
        for _ in range(MAX_CAS_ATTEMPTS):
            args, indices = self._plan(items, groups, members, tail, known, reason, now)
            raw = await self._eval("finish", self.owner, *args)
            tag = raw[0]
            tail = (int(raw[1]), raw[2].decode())
            self._tail = tail
            if tag == b"ok":
                report = FinishReport(indices=indices, ledger_index=tail[0] - 1 if tail[0] else None)
                pos = 3
                for _ in groups:
                    for _ in range(2):  # queued (cancelled now), then leased (flagged)
                        count = int(raw[pos])
                        report.cancelled.extend(job_id.decode() for job_id in raw[pos + 1 : pos + 1 + count])
                        pos += 1 + count
                for ids in (report.swarms_ended, report.submitted):
                    count = int(raw[pos])
                    ids.extend(value.decode() for value in raw[pos + 1 : pos + 1 + count])
                    pos += 1 + count
                return report
            self.cas_misses += 1
            self._contended = tag == b"tail"
            if tag == b"exists":
                known.update((raw[i].decode(), int(raw[i + 1])) for i in range(3, len(raw), 2))
            elif tag == b"state":
                members = {group: await self._members(*group) for group in groups}
        raise BackendUnavailable(f"ledger append on {self.where} lost the race {MAX_CAS_ATTEMPTS} times in a row")

    def _plan(
        self,
        items: Sequence[Finish],
        groups: list[tuple[str, str]],
        members: dict[tuple[str, str], list[_Member]],
        tail: tuple[int, str],
        known: dict[str, int],
        reason: str,
        now: float,
    ) -> tuple[list[Any], dict[str, int]]:
        """The finish script's arguments for the ledger tail ``tail``, and the indices."""
        start, start_hash = tail
        index, prev = tail
        planned: dict[str, int] = {}
        appends: list[Any] = []

        def append(job_id: str, record: bytes, swarm_id: str | None) -> int:
            nonlocal index, prev
            if job_id in known:
                return known[job_id]
            if job_id not in planned:
                digest = chain_hash(index, prev, record)
                appends.extend((job_id, _pack(digest, prev, job_id, record), swarm_id or ""))
                planned[job_id] = index
                prev, index = digest, index + 1
            return planned[job_id]

        indices = {
            item.job_id: append(item.job_id, item.record, item.swarm_id) for item in items if item.record is not None
        }
        disp = {item.job_id: item for item in items}
        gone: set[str] = set()
        group_args: list[Any] = []
        for group in groups:
            queued: list[tuple[_Member, int]] = []
            for member in members[group]:
                if member.job_id in gone:
                    continue
                state, attempt = self._effective(member, disp.get(member.job_id))
                if state in ("ready", "delayed"):
                    queued.append((member, attempt))
            group_args.extend((*group, len(queued)))
            for member, attempt in queued:
                gone.add(member.job_id)
                group_args.extend((member.job_id, attempt))
                append(
                    member.job_id,
                    OutcomeRecord(
                        job_id=member.job_id,
                        gid=member.gid,
                        agent=member.agent,
                        outcome="cancelled",
                        attempt=attempt,
                        finished_at=now,
                        swarm_id=member.swarm_id,
                        error={"type": "Cancelled", "message": reason},
                    ).encode(),
                    member.swarm_id,
                )
        item_args: list[Any] = []
        for item in items:
            item_args.extend(
                (
                    item.job_id,
                    item.disposition.value,
                    repr(float(item.not_before)),
                    item.error or "",
                    "" if item.handle is None else str(item.handle),
                )
            )
        header = [start if appends else -1, start_hash, len(items), len(appends) // 3, len(groups)]
        return [*header, *item_args, *appends, *group_args, *_children_fields(items)], indices

    def _effective(self, member: _Member, item: Finish | None) -> tuple[str | None, int]:
        """Mirror of the finish script's ``effective``: state and attempt after ``item``."""
        state, attempt = member.state, member.attempt
        if item is not None and state != "dead":
            if item.disposition is Disposition.DONE:
                return None, attempt
            if item.disposition is Disposition.DEAD:
                return "dead", attempt
            if (
                state == "leased"
                and member.owner == self.owner
                and (item.handle is None or member.entry == str(item.handle))
            ):
                return "delayed", max(attempt - 1, 0) if item.disposition is Disposition.RELEASE else attempt
        return state, attempt

    async def _members(self, kind: str, value: str) -> list[_Member]:
        raw = await self._eval("members", kind, value)
        members = [
            _Member(
                raw[i].decode(),
                raw[i + 1].decode(),
                _s(raw[i + 2]),
                _s(raw[i + 3]),
                int(raw[i + 4] or 0),
                _s(raw[i + 5]) or "",
                _s(raw[i + 6]) or "",
                _s(raw[i + 7]),
                int(raw[i + 8] or 0),
            )
            for i in range(0, len(raw), 9)
        ]
        members.sort(key=lambda member: member.seq)
        return members

    async def _read_tail(self) -> tuple[int, str]:
        """(next index, hash of the last entry): the list's length past its base, and the last
        entry's hash or, with every entry archived, the anchor's."""
        with self._guard("ledger tail"):
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.llen(self._p + "ledger")
                pipe.lindex(self._p + "ledger", -1)
                pipe.get(self._p + "ledger:base")
                pipe.get(self._p + "ledger:anchor")
                length, last, base, anchor = await pipe.execute()
        if last:
            return int(base or 0) + int(length), last[:64].decode()
        return int(base or 0), anchor[-64:].decode() if anchor else GENESIS_HASH

    async def renew(self, job_ids: Collection[str], *, lease: float) -> None:
        ids = set(job_ids) | self._held
        if ids:
            await self._eval("renew", self.owner, repr(float(lease)), *sorted(ids))

    async def recover(self, *, all_leases: bool) -> int:
        count = int(await self._eval("recover", self.owner, "1" if all_leases else "0", 10_000))
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_EVERY
            await self._prune_consumers()
        return count

    async def _prune_consumers(self) -> None:
        """Forget consumers (daemons of past lives) with nothing pending, idle for an hour."""
        with self._guard("prune consumers"):
            prios: Any = await self.client.zrange(self._q + "prios", 0, -1)
            for prio in prios:
                stream = f"{self._q}s:{prio.decode()}"
                try:
                    consumers: Any = await self.client.xinfo_consumers(stream, "swarmd")
                except ResponseError:
                    continue
                for consumer in consumers:
                    name = consumer["name"]
                    name = name.decode() if isinstance(name, bytes) else str(name)
                    if name != self.owner and consumer["pending"] == 0 and consumer["idle"] > CONSUMER_IDLE_MS:
                        await self.client.xgroup_delconsumer(stream, "swarmd", name)

    async def cancel_requested(self) -> list[str]:
        return [job_id.decode() for job_id in await self._eval("cancel_requested", self.owner)]

    async def next_due(self) -> float | None:
        with self._guard("next_due"):
            first = await self.client.zrange(self._q + "delayed", 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    async def counts(self) -> dict[str, int]:
        ready, delayed, leased, dead = await self._eval("counts")
        return {"ready": int(ready), "delayed": int(delayed), "leased": int(leased), "dead": int(dead)}

    async def publish_agents(self, names: Sequence[str]) -> None:
        """Record the agents this daemon serves; the last daemon to publish wins, as with SQLite
        (daemons sharing a queue are expected to serve the same agents)."""
        with self._guard("publish_agents"):
            await self.client.set(self._q + "agents", msgspec.json.encode(sorted(set(names))))

    async def publish_holds(self, holds: Mapping[str, str]) -> None:
        with self._guard("publish_holds"):
            await self.client.set(self._q + "holds", msgspec.json.encode(dict(holds)))

    async def holds(self) -> dict[str, str]:
        with self._guard("holds"):
            raw: Any = await self.client.get(self._q + "holds")
        return {} if raw is None else {str(k): str(v) for k, v in msgspec.json.decode(raw).items()}

    async def published_agents(self) -> list[str] | None:
        with self._guard("published_agents"):
            raw: Any = await self.client.get(self._q + "agents")
        return None if raw is None else [str(name) for name in msgspec.json.decode(raw)]

    async def daemon_serving(self) -> bool:
        """A daemon published its agents here (Redis keeps no record of when it stops: a daemon
        that stopped for good still counts)."""
        return await self.published_agents() is not None

    # -- waiters ---------------------------------------------------------------------------
    async def wait_finished(
        self,
        job_ids: Collection[str],
        timeout: float | None,  # noqa: ASYNC109 - a bound, in seconds
        *,
        backstop: float = 1.0,
        every: bool = False,
    ) -> dict[str, StoredEntry]:
        """See `QueueBackend.wait_finished`: the finish script PUBLISHes the ids of the jobs it
        recorded on `finished_channel`; this waiter subscribes before it looks at the ledger."""
        pubsub = self.client.pubsub()
        try:
            with self._guard("wait"):
                await pubsub.subscribe(self.finished_channel)

            async def published(seconds: float) -> set[str] | None:
                with self._guard("wait"):
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=seconds)
                _raise_if_cancelling()
                if message is None:
                    return set()
                data = message.get("data")
                return set(data.decode().split("\n")) if isinstance(data, bytes) else None

            return await wait_for_entries(self._entries_of, job_ids, timeout, backstop, published, every=every)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(pubsub.aclose())  # type: ignore[no-untyped-call]

    @property
    def finished_channel(self) -> str:
        """The Pub/Sub channel on which the finish script names the jobs it recorded (one
        message per commit, ids separated by newlines)."""
        return self._p + "finished"

    # -- operators -------------------------------------------------------------------------
    async def status(self, job_id: str) -> JobInfo:
        # A job only moves forward, each step in one script: awaiting (a follow-up in the
        # ``then`` hash) → queued (its job hash) → recorded (its ledger entry). Looking in that
        # order finds a job that moves between two looks; the reverse order could miss it.
        awaiting = await self._awaiting(job_id)
        if awaiting is not None:
            return awaiting
        rows = _infos(await self._eval("info", job_id))
        if rows:
            info = (await self._with_entries([rows[0][1]]))[0]
            with self._guard("status"):
                body = await self.client.hget(self.job_key(job_id), "body")
            with contextlib.suppress(JobValidationError):  # an undecodable job has no family to show
                if body is not None:
                    job = decode_job(body)
                    info.parent_id, info.follows = job.parent_id, job.follows
            return info
        entries = await self._entries_of([job_id])
        if entries:
            return JobInfo.from_ledger(entries[0])
        raise JobNotFound(f"job {job_id}")

    async def _awaiting(self, job_id: str) -> JobInfo | None:
        """The follow-up ``job_id`` while its swarm has not ended (None: it is not one, or its
        swarm ended and it was submitted)."""
        with self._guard("status"):
            swarm: Any = await self.client.hget(self._q + "then", job_id)
            found: Any = (
                None
                if swarm is None
                else await self.client.hmget(f"{self._q}swarmc:{swarm.decode()}", ["size", "ended", "then_body"])
            )
        if found is None or found[2] is None:
            return None
        return JobInfo.awaiting(decode_job(found[2]), swarm.decode(), int(found[0]), int(found[1] or 0))

    async def ledger_entries_of(self, job_ids: Sequence[str]) -> list[StoredEntry]:
        return await self._entries_of(job_ids)

    async def _entries_of(self, job_ids: Sequence[str]) -> list[StoredEntry]:
        """The ledger entries of these job ids (those that have one), in index order."""
        if not job_ids:
            return []
        with self._guard("ledger"):
            indices = await self.client.hmget(self._p + "ledger:ids", list(job_ids))
            found = sorted(int(index) for index in indices if index is not None)
            for _ in range(MAX_CAS_ATTEMPTS):
                base = await self._ledger_base()
                async with self.client.pipeline(transaction=True) as pipe:
                    pipe.get(self._p + "ledger:base")
                    for index in found:
                        pipe.lindex(self._p + "ledger", index - base)
                    now_base, *raws = await pipe.execute()
                if int(now_base or 0) == base:  # no archive moved the list meanwhile
                    break
        return [
            _unpack(index, raw) for index, raw in zip(found, raws, strict=True) if raw is not None and index >= base
        ]

    async def _ledger_base(self) -> int:
        """The index of the ledger list's first entry (0 until an archive trimmed it)."""
        return int(await self.client.get(self._p + "ledger:base") or 0)

    # -- workflows ---------------------------------------------------------------------------
    async def swarm_progress(self, swarm_id: str) -> SwarmProgress | None:
        with self._guard("swarm_progress"):
            found: Any = await self.client.hmget(f"{self._q}swarmc:{swarm_id}", ["size", "ended", "then_id"])
        size, ended, then_id = found
        if size is None:
            return None
        return SwarmProgress(swarm_id, int(size), int(ended or 0), _s(then_id))

    async def swarm_outcomes(self, swarm_id: str) -> list[StoredEntry]:
        with self._guard("swarm_outcomes"):
            members: Any = await self.client.smembers(f"{self._q}swarm:{swarm_id}")
        return await self._entries_of(sorted(member.decode() for member in members))

    async def swarm_status(self, swarm_id: str) -> list[JobInfo]:
        with self._guard("swarm_status"):
            members: Any = await self.client.smembers(f"{self._q}swarm:{swarm_id}")
        ids = sorted(member.decode() for member in members)
        rows = _infos(await self._eval("info", *ids)) if ids else []
        infos = [info for _, info in sorted(rows, key=lambda row: row[0])]
        queued = {info.job_id for info in infos}  # a dead letter's row stands for its entry, as in `status`
        infos.extend(
            JobInfo.from_ledger(entry) for entry in await self._entries_of([i for i in ids if i not in queued])
        )
        if not infos:
            raise JobNotFound(f"swarm {swarm_id}")
        return await self._with_entries(infos)

    async def _with_entries(self, infos: list[JobInfo]) -> list[JobInfo]:
        """Fill the outcome and ledger index of the dead letters among ``infos`` from the ledger
        entry their death wrote (in the same script that buried them)."""
        dead = {info.job_id: info for info in infos if info.state == JobState.DEAD and info.ledger_index is None}
        for entry in await self._entries_of(list(dead)):
            if entry.job_id is not None:
                dead[entry.job_id].with_entry(entry)
        return infos

    async def list_jobs(self, state: str | None, limit: int, where: JobFilter | None = None) -> list[JobInfo]:
        if limit <= 0:
            return []
        rows = _infos(await self._eval("list", *_list_args(where or JobFilter(state=state), state, limit)))
        rows.sort(key=lambda row: (-row[1].priority, row[0]))
        return await self._with_entries([info for _, info in rows[:limit]])

    async def count_jobs(self, where: JobFilter) -> int:
        return int(await self._eval("list", *_list_args(where, None, _UNLIMITED), "count"))

    async def cancel_matching(self, where: JobFilter) -> list[str]:
        """Cancel the matching jobs, `CANCEL_BATCH` to a script (each batch atomic, as `cancel`)."""
        if where.state == JobState.DEAD:
            return []
        rows = _infos(await self._eval("list", *_list_args(where, None, _UNLIMITED)))
        ids = [info.job_id for _, info in sorted(rows, key=lambda row: row[0]) if info.state != JobState.DEAD]
        affected: list[str] = []
        for start in range(0, len(ids), CANCEL_BATCH):
            groups = [("job", job_id) for job_id in ids[start : start + CANCEL_BATCH]]
            affected.extend((await self._commit([], groups, "cancelled by request")).cancelled)
        return affected

    async def cancel(self, job_id: str | None = None, swarm_id: str | None = None) -> list[str]:
        if job_id is not None:
            group = ("job", job_id)
        elif swarm_id is not None:
            group = ("swarm", swarm_id)
        else:
            raise ValueError("cancel needs a job id or a swarm id")
        affected = (await self._commit([], [group], "cancelled by request")).cancelled
        if not affected:
            with self._guard("cancel"):
                if job_id is not None:
                    known = await self.client.exists(self.job_key(job_id)) or await self.client.hexists(
                        self._p + "ledger:ids", job_id
                    )
                else:
                    known = await self.client.exists(f"{self._q}swarm:{swarm_id}")
            if not known:
                raise JobNotFound(f"{group[0]} {group[1]}")
        return affected

    async def ledger_entries(self, start: int = 0, limit: int | None = None) -> list[StoredEntry]:
        entries: list[StoredEntry] = []
        index = max(0, start)
        while limit is None or len(entries) < limit:
            want = READ_BATCH if limit is None else min(READ_BATCH, limit - len(entries))
            raws, index = await self._lrange_from(index, want)
            entries.extend(_unpack(index + offset, raw) for offset, raw in enumerate(raws))
            index += len(raws)
            if len(raws) < want:
                break
        return entries

    async def _lrange_from(self, index: int, want: int) -> tuple[list[bytes], int]:
        """Up to ``want`` raw entries from ledger index ``index`` (or from the first live one, if
        that was archived), and the index of the first, read against an unmoved base."""
        with self._guard("ledger"):
            for _ in range(MAX_CAS_ATTEMPTS):
                base = await self._ledger_base()
                first = max(index, base)
                async with self.client.pipeline(transaction=True) as pipe:
                    pipe.get(self._p + "ledger:base")
                    pipe.lrange(self._p + "ledger", first - base, first - base + want - 1)
                    now_base, raws = await pipe.execute()
                if int(now_base or 0) == base:
                    return list(raws), first
        raise BackendUnavailable(f"ledger on {self.where} kept moving under archiving")

    async def ledger_tail(self, n: int) -> list[StoredEntry]:
        with self._guard("ledger"):
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.llen(self._p + "ledger")
                pipe.get(self._p + "ledger:base")
                length, base = await pipe.execute()
        end = int(base or 0) + int(length)
        return await self.ledger_entries(max(0, end - n), n) if n > 0 else []

    async def verify(self) -> VerifyReport:
        return verify(await self.ledger_entries(), await self.ledger_anchor())

    async def dead_letters(self, limit: int) -> list[JobInfo]:
        return await self.list_jobs(JobState.DEAD.value, limit)

    async def requeue(self, job_id: str | None, *, all_dead: bool = False) -> list[tuple[str, str]]:
        with self._guard("requeue"):
            if all_dead:
                dead_ids: Any = await self.client.zrange(self._q + "dead", 0, -1)
                ids = [member.decode() for member in dead_ids]
            else:
                ids = [job_id] if job_id is not None else []
            async with self.client.pipeline(transaction=False) as pipe:
                for old_id in ids:
                    pipe.hmget(self.job_key(old_id), ["state", "body", "seq"])
                rows = await pipe.execute()
        dead = sorted(
            (
                (int(seq or 0), old_id, body)
                for old_id, (state, body, seq) in zip(ids, rows, strict=True)
                if state == b"dead"
            ),
        )
        if not all_dead and not dead:
            raise JobNotFound(f"dead letter {job_id}")
        now = time.time()
        pairs: list[tuple[str, str]] = []
        args: list[Any] = [len(dead)]
        for _, old_id, body in dead:
            new = msgspec.structs.replace(
                decode_job(body), id=new_job_id(), attempt=0, not_before=0.0, enqueued_at=now, idempotency_key=None
            )
            args.extend((old_id, *_job_fields(new)))
            pairs.append((old_id, new.id))
        if not pairs:
            return []
        try:
            await self._eval("requeue", *args)
        except ResponseError as exc:
            if str(exc).startswith("NOTDEAD"):
                raise JobNotFound(f"dead letter {str(exc).rsplit(maxsplit=1)[-1]}") from None
            raise
        return pairs

    async def purge_dead(self, older_than: float) -> int:
        return int(await self._upkeep_eval(UpkeepStep.PURGE_DEAD, "purge", repr(float(older_than))))

    # -- schedules: the hash ``{prefix}:q:<queue>:schedules`` (see swarmd.queue.redis.schedules) --
    async def publish_schedules(self, schedules: Sequence[Schedule]) -> None:
        key = self._q + "schedules"
        fields = {f"def:{s.name}": msgspec.json.encode(s.as_dict()) for s in schedules}
        with self._guard("publish_schedules"):
            names: Any = await self.client.hkeys(key)
            stale = [f for f in (n.decode() for n in names) if f.startswith("def:") and f not in fields]
            async with self.client.pipeline(transaction=True) as pipe:
                if stale:
                    pipe.hdel(key, *stale)
                if fields:
                    pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
                await pipe.execute()

    async def record_tick(self, name: str, tick: float, job_id: str) -> None:
        with self._guard("record_tick"):
            await self.client.eval(RECORD_TICK, 1, self._q + "schedules", f"tick:{name}", repr(float(tick)), job_id)

    async def schedule_states(self) -> list[ScheduleState]:
        with self._guard("schedule_states"):
            raw: Any = await self.client.hgetall(self._q + "schedules")
        return states_from_hash(raw)

    # -- ledger archive --------------------------------------------------------------------
    async def ledger_anchor(self) -> Anchor | None:
        with self._guard("ledger anchor"):
            raw = await self.client.get(self._p + "ledger:anchor")
        return None if raw is None else Anchor.parse(raw.decode() if isinstance(raw, bytes) else str(raw))

    async def forget_ledger(
        self,
        through: int,
        expected: Anchor | None,
        *,
        remember_for: float = DEFAULT_HORIZON,
        now: float | None = None,
    ) -> Anchor:
        gen = horizon.generation(time.time() if now is None else now, remember_for)
        anchor = "" if expected is None else str(expected)
        raw = await self._upkeep_eval(UpkeepStep.FORGET, "forget", anchor, through, gen)
        tag = raw[0]
        if tag == b"anchor":
            current = raw[1].decode() or None
            raise ArchiveError("ledger anchor", f"is {current}, not {expected}: another archive ran meanwhile")
        if tag == b"missing":
            raise ArchiveError(f"ledger entry {through}", "is not in the live store")
        return Anchor.parse(raw[1].decode())

    async def archive_hold(self) -> int | None:
        with self._guard("archive hold"):
            lowest: Any = await self.client.zrange(self._p + "ledger:held", 0, 0, withscores=True)
        return int(lowest[0][1]) if lowest else None

    async def archived_ids(self, job_ids: Sequence[str], *, now: float | None = None) -> set[str]:
        ids = list(job_ids)
        if not ids:
            return set()
        keys = [hashlib.sha1(job_id.encode(), usedforsecurity=False).hexdigest()[:16] for job_id in ids]
        dead = horizon.first_dead(await self._server_time() if now is None else now)
        found = [False] * len(ids)
        with self._guard("archived ids"):
            gens: Any = await self.client.zrangebyscore(self._p + _ARCHIVED_GENS, f"({dead}", "+inf")
            for gen in gens:
                hits = await self.client.smismember(f"{self._p}{_ARCHIVED}{gen.decode()}", keys)
                found = [was or bool(hit) for was, hit in zip(found, hits, strict=True)]
        return {job_id for job_id, hit in zip(ids, found, strict=True) if hit}

    async def expire_archived_ids(self, limit: int, *, now: float | None = None) -> int:
        """Redis deletes each generation's set itself (its EXPIREAT): only the names of dead
        generations are dropped from ``ledger:archived:gens``. Returns 0 (no id counted)."""
        dead = horizon.first_dead(await self._server_time() if now is None else now)
        with self._guard("expire archived ids"):
            await self.client.zremrangebyscore(self._p + _ARCHIVED_GENS, "-inf", dead)
        return 0

    async def _server_time(self) -> float:
        """Redis's clock (the one the scripts' lookups use), not this host's."""
        with self._guard("time"):
            seconds, micros = await self.client.time()
        return float(seconds) + micros / 1e6

    async def reclaim_space(self) -> None:
        return None  # Redis frees a trimmed list's memory at once

    # -- bounded state ---------------------------------------------------------------------
    async def expire_finished(self, older_than: float, limit: int) -> int:
        """Forget up to ``limit`` idempotency keys, and the member sets of up to ``limit``
        swarms, whose jobs finished more than ``older_than`` seconds ago (one script: the
        'expire' of scripts.py); return how many. A swarm with a member still queued or
        running, or held by the ``swarm_held`` hook, is kept."""
        return int(await self._upkeep_eval(UpkeepStep.EXPIRE, "expire", repr(float(older_than)), int(limit)))

    async def give_back_space(self) -> bool:
        """Redis frees a deleted key's memory at once: nothing to do."""
        return False
