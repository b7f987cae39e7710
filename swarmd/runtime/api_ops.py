"""What each API socket operation does, on the daemon's open backend.

One method per `swarmd.api.protocol.Op`, registered in `ApiOps.handlers`: a new operation (a
streaming ``wait`` of the results issue) is one more entry. A submit is checked as a direct
submit is (agent known, payload plain JSON data within the limits, every field valid: decoding
applies the same constraints as `swarmd.model.seal`) and, in addition, against the
``[api.allow]`` table; each job gets its submitter (``submitted_by``)
and its attempt count reset. Nothing is written unless every job of the batch passes.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any

import msgspec
import structlog

from swarmd.api.protocol import (
    CancelArgs,
    FilterArgs,
    JobIdsArgs,
    LedgerTailArgs,
    ListJobsArgs,
    NoArgs,
    Op,
    PingResult,
    Request,
    StatusArgs,
    SubmitArgs,
    SwarmStatusArgs,
    WaitFinishedArgs,
    decode_args,
    encode,
)
from swarmd.config import Settings
from swarmd.errors import ApiRefused, JobValidationError, UnknownAgentError
from swarmd.ledger.chain import StoredEntry
from swarmd.model import check_payload
from swarmd.policies.api_access import ApiAccess, Peer
from swarmd.queue.base import JobFilter, QueueBackend
from swarmd.queue.waiting import FinishedWaiters
from swarmd.telemetry.metrics import Metrics
from swarmd.version import __version__

log = structlog.get_logger("swarmd.api")
encode_json = msgspec.json.Encoder().encode

#: One operation: the peer, the decoded arguments; returns the result to encode.
Handler = Callable[[Peer, Any], Awaitable[Any]]


class ApiOps:
    """The operations, bound to one backend, the daemon's agents, settings and metrics."""

    def __init__(
        self,
        backend: QueueBackend,
        agents: Collection[str],
        settings: Settings,
        metrics: Metrics,
        waiters: FinishedWaiters | None = None,
    ) -> None:
        self._backend = backend
        #: Woken by the worker's commits (see `wait_finished`).
        self.waiters = waiters or FinishedWaiters()
        self._agents = frozenset(agents)
        self._settings = settings
        self._metrics = metrics
        self._access = ApiAccess(settings.api.allow, daemon_uid=os.geteuid())
        self.handlers: dict[Op, Handler] = {
            Op.SUBMIT_MANY: self.submit_many,
            Op.STATUS: self.status,
            Op.SWARM_STATUS: self.swarm_status,
            Op.CANCEL: self.cancel,
            Op.LIST_JOBS: self.list_jobs,
            Op.LEDGER_TAIL: self.ledger_tail,
            Op.COUNTS: self.counts,
            Op.COUNT_JOBS: self.count_jobs,
            Op.CANCEL_MATCHING: self.cancel_matching,
            Op.HOLDS: self.holds,
            Op.LEDGER_ENTRIES: self.ledger_entries,
            Op.WAIT_FINISHED: self.wait_finished,
            Op.PUBLISHED_AGENTS: self.published_agents,
            Op.SWARM_PROGRESS: self.swarm_progress,
            Op.PING: self.ping,
        }

    @property
    def restricts_users(self) -> bool:
        """Whether an ``[api.allow]`` table limits who may act for which GIDs."""
        return bool(self._settings.api.allow)

    async def run(self, peer: Peer, request: Request) -> bytes:
        """Decode a request's arguments, run its operation, return the encoded result."""
        args = decode_args(request.op, request.args)
        if request.op is Op.SUBMIT_MANY:
            return encode(await self.submit_many(peer, args, raw_size=len(request.args)))
        return encode(await self.handlers[request.op](peer, args))

    def _check_access(self, peer: Peer, gids: Iterable[str], action: str) -> None:
        refusal = self._access.check(peer, gids, action)
        if refusal is not None:
            self._metrics.refuse_api(refusal.reason)
            log.warning("api_refused", peer=peer.label(), action=action, reason=refusal.reason.value)
            raise ApiRefused(refusal.reason.value, refusal.detail)

    # -- operations ------------------------------------------------------------------------
    async def submit_many(self, peer: Peer, args: SubmitArgs, *, raw_size: int = 0) -> list[str]:
        """Store the jobs in one transaction, as a direct submit would; ``raw_size``: the
        encoded arguments' size (no payload can be larger than its frame)."""
        submitter = peer.label()
        jobs = args.jobs
        follow_ups = [plan.then for plan in args.plans]
        limit = self._settings.max_payload_bytes
        for position, job in enumerate([*jobs, *follow_ups]):
            # Every typed field was checked by decoding (the same constraints as `seal`); what
            # MessagePack can carry and JSON cannot (bytes, extension types, deep nesting), and
            # the payload's size as it will be stored, are checked here.
            try:
                if job.agent not in self._agents:
                    raise UnknownAgentError(job.agent, sorted(self._agents))
                check_payload(job.payload)
                if raw_size > limit and job.payload is not None:
                    size = len(encode_json(job.payload))
                    if size > limit:
                        raise JobValidationError("payload", f"{size} bytes is over the limit of {limit}")
            except JobValidationError as exc:
                if position >= len(jobs):
                    raise JobValidationError(f"then.{exc.field}", exc.reason) from None
                where = f" (job {position} of {len(jobs)})" if len(jobs) > 1 else ""
                raise JobValidationError(exc.field, exc.reason + where) from None
        for plan in args.plans:
            if plan.then.follows != plan.swarm_id or not any(job.swarm_id == plan.swarm_id for job in jobs):
                raise JobValidationError("then", f"the follow-up must follow swarm {plan.swarm_id} of this submit")
        self._check_access(peer, {job.gid for job in [*jobs, *follow_ups]}, "submit")
        for job in [*jobs, *follow_ups]:  # decoded for this request alone: set in place, not copied
            msgspec.structs.force_setattr(job, "submitted_by", submitter)
            msgspec.structs.force_setattr(job, "attempt", 0)
        ids = await self._backend.submit(jobs, args.plans)
        log.info(
            "api_submitted",
            submitted_by=submitter,
            jobs=len(ids),
            swarm_id=jobs[0].swarm_id,
            gids=sorted({job.gid for job in jobs})[:10],
        )
        return ids

    async def status(self, peer: Peer, args: StatusArgs) -> Any:
        return await self._backend.status(args.job_id)

    async def swarm_status(self, peer: Peer, args: SwarmStatusArgs) -> Any:
        return await self._backend.swarm_status(args.swarm_id)

    async def swarm_progress(self, peer: Peer, args: SwarmStatusArgs) -> Any:
        return await self._backend.swarm_progress(args.swarm_id)

    async def cancel(self, peer: Peer, args: CancelArgs) -> list[str]:
        if (args.job_id is None) == (args.swarm_id is None):
            raise JobValidationError("job_id", "give a job id or a swarm id, not both and not neither")
        if self._access.patterns(peer) is not None:  # an allow table limits this peer: check the GIDs
            if args.job_id is not None:
                gids = {(await self._backend.status(args.job_id)).gid}
            else:
                assert args.swarm_id is not None
                gids = {info.gid for info in await self._backend.swarm_status(args.swarm_id)}
            self._check_access(peer, gids, "cancel")
        ids = await self._backend.cancel(args.job_id, args.swarm_id)
        log.info("api_cancelled", submitted_by=peer.label(), jobs=len(ids))
        return ids

    async def list_jobs(self, peer: Peer, args: ListJobsArgs) -> Any:
        where = JobFilter(args.state, args.agent, args.gid, args.swarm_id)
        return await self._backend.list_jobs(args.state, args.limit, where)

    async def count_jobs(self, peer: Peer, args: FilterArgs) -> int:
        return await self._backend.count_jobs(JobFilter(args.state, args.agent, args.gid, args.swarm_id))

    async def cancel_matching(self, peer: Peer, args: FilterArgs) -> list[str]:
        if self._access.patterns(peer) is not None:  # a producer limited to some GIDs names one of them
            if args.gid is None:
                raise JobValidationError(
                    "gid", "a producer limited by [api.allow] cancels in bulk by one GID it may act for"
                )
            self._check_access(peer, [args.gid], "cancel")
        ids = await self._backend.cancel_matching(JobFilter(args.state, args.agent, args.gid, args.swarm_id))
        log.info("api_cancelled", submitted_by=peer.label(), jobs=len(ids))
        return ids

    async def ledger_tail(self, peer: Peer, args: LedgerTailArgs) -> Any:
        return await self._backend.ledger_tail(args.n)

    async def ledger_entries(self, peer: Peer, args: JobIdsArgs) -> list[StoredEntry]:
        return await self._backend.ledger_entries_of(args.job_ids)

    async def wait_finished(self, peer: Peer, args: WaitFinishedArgs) -> list[str]:
        """The ids of the jobs among ``args.job_ids`` whose outcome is committed: at once if some
        are, else as soon as a commit records one (or [] after ``args.timeout`` seconds). The
        waiter registers before it looks at the ledger, so no commit falls in between."""
        future = self.waiters.register(args.job_ids)
        try:
            done = [entry.job_id for entry in await self._backend.ledger_entries_of(args.job_ids) if entry.job_id]
            if done:
                return done
            try:
                woken = await asyncio.wait_for(asyncio.shield(future), args.timeout)
            except TimeoutError:
                return []
            return sorted(woken or ())
        finally:
            self.waiters.forget(args.job_ids, future)

    async def holds(self, peer: Peer, args: NoArgs) -> dict[str, str]:
        return await self._backend.holds()

    async def counts(self, peer: Peer, args: NoArgs) -> dict[str, int]:
        return await self._backend.counts()

    async def published_agents(self, peer: Peer, args: NoArgs) -> list[str] | None:
        return sorted(self._agents)

    async def ping(self, peer: Peer, args: NoArgs) -> PingResult:
        return PingResult(version=__version__, peer=peer.label())
