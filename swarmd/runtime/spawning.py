"""``ctx.submit`` in the daemon: a handler's children, held until its outcome commits.

`Spawning` is lent to every `swarmd.JobContext` the daemon builds (one object for all jobs: a
job that submits nothing pays for nothing). A submit drafts and seals the children at once —
a bad spec or an unknown agent raises in the handler, where its author sees it — and keeps them
on the context; the runner hands them to the `Finish` of a successful attempt, and the backend
writes them in the commit that records the parent's outcome, the first time only. Children's
ids are derived from the parent's id and their position, so every attempt names the same ones.
Each submit opens a PRODUCER span under the handler's CONSUMER span, so the children join the
parent's trace.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

from swarmd.errors import JobValidationError, UnknownAgentError
from swarmd.handles import Submitted
from swarmd.ledger.chain import StoredEntry
from swarmd.model import MAX_PAYLOAD_BYTES, draft_spec, seal
from swarmd.registry import JobContext
from swarmd.results import JobResult
from swarmd.telemetry.tracing import Tracing
from swarmd.workflows import DERIVED_SPEC_KEYS, check_swarm_options, child_id, child_swarm_id, plan_follow_up

#: Most children one run of a handler may submit (they commit in one transaction with its outcome).
MAX_CHILDREN: Final = 100_000


class Spawning:
    """The daemon's side of ``ctx.submit`` and ``ctx.swarm_results``."""

    def __init__(
        self,
        tracing: Tracing,
        queue: str,
        known_agent: Callable[[str], bool],
        agents: Callable[[], list[str]],
        swarm_outcomes: Callable[[str], Awaitable[list[StoredEntry]]],
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    ) -> None:
        self.tracing = tracing
        self.queue = queue
        self._known = known_agent
        self._agents = agents
        self._swarm_outcomes = swarm_outcomes
        self.max_payload_bytes = max_payload_bytes

    def spawn(
        self,
        ctx: JobContext,
        specs: Sequence[Mapping[str, Any]],
        *,
        swarm: bool,
        fail_fast: bool,
        then: Mapping[str, Any] | None,
        then_when: str,
    ) -> Submitted:
        check_swarm_options(swarm=swarm, fail_fast=fail_fast, then=then, then_when=then_when)
        parent = ctx.job
        first = ctx.positions
        count = len(specs)
        already = len(ctx.children or ())
        if already + count > MAX_CHILDREN:
            raise JobValidationError("$", f"a handler may submit at most {MAX_CHILDREN} jobs in one run")
        swarm_id = child_swarm_id(parent.id, first) if swarm and count else None
        now = time.time()
        with self.tracing.producer(self.queue) as traceparent:
            drafts = [
                draft_spec(
                    spec,
                    job_id=child_id(parent.id, first + position),
                    allowed=DERIVED_SPEC_KEYS,
                    swarm_id=swarm_id,
                    swarm_size=count if swarm_id else None,
                    fail_fast=fail_fast,
                    traceparent=traceparent,
                    now=now,
                    parent_id=parent.id,
                )
                for position, spec in enumerate(specs)
            ]
            for job in drafts:
                self._check_agent(job.agent)
            jobs = seal(drafts, max_payload_bytes=self.max_payload_bytes)
            plan = None
            if then is not None and swarm_id is not None:
                plan = plan_follow_up(
                    then,
                    swarm_id=swarm_id,
                    size=count,
                    then_when=then_when,
                    traceparent=traceparent,
                    now=now,
                    parent_id=parent.id,
                    max_payload_bytes=self.max_payload_bytes,
                )
                self._check_agent(plan.then.agent)
        # Only a submit that raised nothing takes positions: a retried handler that fixes a bad
        # spec still names the same children as an attempt that never had one.
        ctx.positions = first + count
        if ctx.children is None:
            ctx.children = []
        ctx.children.extend(jobs)
        if plan is not None:
            if ctx.plans is None:
                ctx.plans = []
            ctx.plans.append(plan)
        return Submitted([job.id for job in jobs], swarm_id, None, plan.then.id if plan else None)

    async def swarm_results(self, swarm_id: str) -> list[JobResult]:
        entries = await self._swarm_outcomes(swarm_id)
        return [JobResult.from_record(str(entry.job_id), entry.index, entry.decoded()) for entry in entries]

    def _check_agent(self, agent: str) -> None:
        if not self._known(agent):
            raise UnknownAgentError(agent, self._agents())
