"""A `QueueBackend` that is a connection to the daemon's API socket: what `swarmd.Client` uses
when the state directory is not its caller's to open.

It serves what a producer and a reader need (submit, status, swarm status, cancel, jobs,
ledger tail, counts, published agents); the worker's operations and the operator's (the
whole ledger, verify, dead letters) need direct access and raise `ApiError` saying so.
One request at a time per connection; errors come back as the `swarmd.errors` class the daemon
raised (`swarmd.api.protocol.raise_error`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import msgspec

from swarmd.api.protocol import (
    HEADER,
    MAX_LIST,
    MAX_WAIT,
    VERSION,
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
    decode_response,
    decode_result,
    encode,
    frame,
    frame_length,
    raise_error,
)
from swarmd.errors import ApiError, ApiProtocolError, ApiRefused, BackendUnavailable, JobValidationError
from swarmd.ledger.chain import Anchor, StoredEntry, VerifyReport
from swarmd.model import Job, JobState, SwarmPlan
from swarmd.queue.base import (
    Finish,
    FinishReport,
    JobFilter,
    JobInfo,
    Reserved,
    SwarmProgress,
    UpkeepObserver,
    WakeReason,
)
from swarmd.queue.waiting import wait_for_entries
from swarmd.schedules import Schedule, ScheduleState
from swarmd.storage.horizon import DEFAULT_HORIZON


class SocketBackend:
    """The daemon's API socket at ``path``, as a queue backend (not connected until `open`)."""

    name = "socket"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()
        #: Who the daemon takes this client for (its ``submitted_by``), known after `open`.
        self.peer: str | None = None
        #: The daemon runs (and times) the housekeeping this client asks for: nothing to time here.
        self.on_upkeep_step: UpkeepObserver | None = None

    async def open(self) -> None:
        """Connect; ApiRefused if this user may not (not in the socket's group),
        BackendUnavailable if no daemon answers there."""
        try:
            self._reader, self._writer = await asyncio.open_unix_connection(str(self.path), limit=2**16)
        except PermissionError:
            raise ApiRefused(
                "connect",
                f"permission denied on the API socket {self.path}: ask the operator to add this user to "
                "the socket's group (api_group), and to put the socket in a directory it may enter",
            ) from None
        except OSError as exc:
            raise BackendUnavailable(
                f"no daemon answers on the API socket {self.path}: {exc.strerror or exc}"
            ) from None
        ping: PingResult = await self._call(Op.PING, NoArgs())
        self.peer = ping.peer

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _call(self, op: Op, args: msgspec.Struct) -> Any:
        """Send one request and wait for its response; raise what the daemon raised."""
        if self._reader is None or self._writer is None:
            raise ApiError(f"not connected to the API socket {self.path}")
        request_id = next(self._ids)
        try:
            data = frame(Request(VERSION, request_id, op, msgspec.Raw(encode(args))))
        except ApiProtocolError as exc:
            raise JobValidationError("$", f"{exc.reason}: submit fewer or smaller jobs at a time") from None
        async with self._lock:
            try:
                self._writer.write(data)
                await self._writer.drain()
                header = await self._reader.readexactly(HEADER.size)
                response = decode_response(await self._reader.readexactly(frame_length(header)))
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                await self.close()
                raise BackendUnavailable(f"the daemon closed the API socket {self.path}: {exc}") from None
        if response.error is not None or not response.ok:
            if response.error is None:
                raise ApiError("the daemon answered not ok without saying why")
            raise_error(response.error)
        if response.id != request_id:
            raise ApiProtocolError("id", f"answer to request {response.id}, expected {request_id}")
        return decode_result(op, response.result)

    # -- producers and readers ----------------------------------------------------------------
    async def submit(self, jobs: Sequence[Job], plans: Sequence[SwarmPlan] = ()) -> list[str]:
        result: list[str] = await self._call(Op.SUBMIT_MANY, SubmitArgs(list(jobs), list(plans)))
        return result

    async def swarm_progress(self, swarm_id: str) -> SwarmProgress | None:
        result: SwarmProgress | None = await self._call(Op.SWARM_PROGRESS, SwarmStatusArgs(swarm_id))
        return result

    async def swarm_outcomes(self, swarm_id: str) -> list[StoredEntry]:
        self._direct_only("reading a swarm's outcomes")

    async def published_agents(self) -> list[str] | None:
        result: list[str] | None = await self._call(Op.PUBLISHED_AGENTS, NoArgs())
        return result

    async def counts(self) -> dict[str, int]:
        result: dict[str, int] = await self._call(Op.COUNTS, NoArgs())
        return result

    async def status(self, job_id: str) -> JobInfo:
        result: JobInfo = await self._call(Op.STATUS, StatusArgs(job_id))
        return result

    async def swarm_status(self, swarm_id: str) -> list[JobInfo]:
        result: list[JobInfo] = await self._call(Op.SWARM_STATUS, SwarmStatusArgs(swarm_id))
        return result

    async def list_jobs(self, state: str | None, limit: int, where: JobFilter | None = None) -> list[JobInfo]:
        where = where or JobFilter()
        state = where.state or state
        args = ListJobsArgs(
            JobState(state) if state is not None else None, limit, where.agent, where.gid, where.swarm_id
        )
        result: list[JobInfo] = await self._call(Op.LIST_JOBS, args)
        return result

    async def count_jobs(self, where: JobFilter) -> int:
        result: int = await self._call(Op.COUNT_JOBS, _filter_args(where))
        return result

    async def cancel_matching(self, where: JobFilter) -> list[str]:
        result: list[str] = await self._call(Op.CANCEL_MATCHING, _filter_args(where))
        return result

    async def ledger_entries_of(self, job_ids: Sequence[str]) -> list[StoredEntry]:
        found: list[StoredEntry] = []
        for start in range(0, len(job_ids), MAX_LIST):
            found += await self._call(Op.LEDGER_ENTRIES, JobIdsArgs(list(job_ids[start : start + MAX_LIST])))
        return found

    async def wait_finished(
        self,
        job_ids: Collection[str],
        timeout: float | None,  # noqa: ASYNC109 - a bound, in seconds
        *,
        backstop: float = 1.0,
        every: bool = False,
    ) -> dict[str, StoredEntry]:
        """See `QueueBackend.wait_finished`: the daemon answers as soon as it commits one."""
        wanted = list(job_ids)

        async def notified(seconds: float) -> set[str] | None:
            return await self.committed(wanted, seconds)

        # The daemon looks at the ledger when a wait registers: no commit is missed, and an own
        # look is needed only when it went away (a call then raises), so it asks once a minute.
        backstop = max(backstop, MAX_WAIT)
        return await wait_for_entries(self.ledger_entries_of, wanted, timeout, backstop, notified, every=every)

    async def committed(self, job_ids: list[str], seconds: float) -> set[str] | None:
        """Wait at most ``seconds`` for the daemon to commit the outcome of one of ``job_ids``;
        the ids it committed (the daemon looks at its ledger first: none are missed)."""
        seconds = max(0.0, min(seconds, MAX_WAIT))
        done: set[str] = set()
        for start in range(0, len(job_ids), MAX_LIST):
            chunk = job_ids[start : start + MAX_LIST]
            done.update(await self._call(Op.WAIT_FINISHED, WaitFinishedArgs(chunk, seconds if not done else 0.0)))
        return done

    async def holds(self) -> dict[str, str]:
        result: dict[str, str] = await self._call(Op.HOLDS, NoArgs())
        return result

    async def publish_holds(self, holds: Mapping[str, str]) -> None:
        raise ApiError("publishing holds is the daemon's own work, not a producer's")

    async def daemon_serving(self) -> bool:
        """A daemon answers on this socket: it serves the queue."""
        return True

    async def cancel(self, job_id: str | None = None, swarm_id: str | None = None) -> list[str]:
        result: list[str] = await self._call(Op.CANCEL, CancelArgs(job_id, swarm_id))
        return result

    async def ledger_tail(self, n: int) -> list[StoredEntry]:
        result: list[StoredEntry] = await self._call(Op.LEDGER_TAIL, LedgerTailArgs(n))
        return result

    # -- what needs direct access -------------------------------------------------------------
    def _direct_only(self, what: str) -> NoReturn:
        raise ApiError(f"{what} needs direct access to the state (run it as the daemon's user or root)")

    async def ledger_entries(self, start: int = 0, limit: int | None = None) -> list[StoredEntry]:
        self._direct_only("reading the whole ledger")

    async def verify(self) -> VerifyReport:
        self._direct_only("verifying the ledger")

    async def dead_letters(self, limit: int) -> list[JobInfo]:
        self._direct_only("listing dead letters")

    async def ledger_anchor(self) -> Anchor | None:
        self._direct_only("reading the ledger's anchor")

    async def forget_ledger(
        self,
        through: int,
        expected: Anchor | None,
        *,
        remember_for: float = DEFAULT_HORIZON,
        now: float | None = None,
    ) -> Anchor:
        self._direct_only("archiving the ledger")

    async def archive_hold(self) -> int | None:
        self._direct_only("archiving the ledger")

    async def archived_ids(self, job_ids: Sequence[str], *, now: float | None = None) -> set[str]:
        self._direct_only("looking up archived job ids")

    async def expire_archived_ids(self, limit: int, *, now: float | None = None) -> int:
        self._direct_only("expiring archived job ids")

    async def reclaim_space(self) -> None:
        self._direct_only("reclaiming the state's space")

    async def requeue(self, job_id: str | None, *, all_dead: bool = False) -> list[tuple[str, str]]:
        self._direct_only("requeueing dead letters")

    async def purge_dead(self, older_than: float) -> int:
        self._direct_only("purging dead letters")

    async def expire_finished(self, older_than: float, limit: int) -> int:
        self._direct_only("expiring finished jobs")

    async def give_back_space(self) -> bool:
        self._direct_only("giving back space")

    async def reserve(self, limit: int, *, lease: float, exclude_agents: Collection[str] = ()) -> list[Reserved]:
        self._direct_only("running jobs")

    async def finish(self, items: Sequence[Finish]) -> FinishReport:
        self._direct_only("running jobs")

    async def renew(self, job_ids: Collection[str], *, lease: float) -> None:
        self._direct_only("running jobs")

    async def recover(self, *, all_leases: bool) -> int:
        self._direct_only("running jobs")

    async def listen(self) -> None:
        self._direct_only("running jobs")

    async def wait_for_work(self, timeout: float) -> set[WakeReason]:  # noqa: ASYNC109 - the protocol's signature
        self._direct_only("running jobs")

    async def check_persistence(self) -> str | None:
        self._direct_only("running jobs")

    async def cancel_requested(self) -> list[str]:
        self._direct_only("running jobs")

    async def next_due(self) -> float | None:
        self._direct_only("running jobs")

    async def publish_agents(self, names: Sequence[str]) -> None:
        self._direct_only("publishing agents")

    # -- schedules: the daemon's own work; listing them reads the store directly --------------
    async def publish_schedules(self, schedules: Sequence[Schedule]) -> None:
        self._direct_only("publishing schedules")

    async def record_tick(self, name: str, tick: float, job_id: str) -> None:
        self._direct_only("firing schedules")

    async def schedule_states(self) -> list[ScheduleState]:
        self._direct_only("listing schedules")


def _filter_args(where: JobFilter) -> FilterArgs:
    state = JobState(where.state) if where.state is not None else None
    return FilterArgs(state, where.agent, where.gid, where.swarm_id)
