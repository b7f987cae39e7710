"""Workflow vocabulary: a swarm's follow-up, and the ids of a handler's children.

A follow-up (``then=``) is a job spec drafted when its swarm is submitted, with an id derived
from the swarm's (`swarmd.model.derived_id`), so the producer knows it at once and can wait on
it. It is stored with the swarm and submitted by the commit that records the swarm's last
member (see the backends). A handler's children get ids derived from the parent's id and their
position, so every attempt of the handler names the same children.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from swarmd.errors import JobValidationError
from swarmd.model import JOB_SPEC_KEYS, MAX_PAYLOAD_BYTES, FollowWhen, Job, SwarmPlan, derived_id, draft_spec, seal

#: What a child's or a follow-up's spec may hold: their ids are derived, never given, and they
#: take no idempotency key (they are exactly once by construction).
DERIVED_SPEC_KEYS: Final = JOB_SPEC_KEYS - {"job_id", "idempotency_key"}


def check_swarm_options(*, swarm: bool, fail_fast: bool, then: Mapping[str, Any] | None, then_when: str) -> None:
    """Refuse options that need a swarm without one, and an unknown ``then_when``."""
    if fail_fast and not swarm:
        raise JobValidationError("fail_fast", "only a swarm can fail fast (use swarm=True)")
    if then is not None and not swarm:
        raise JobValidationError("then", "only a swarm has a follow-up (use swarm=True)")
    if then_when not in FollowWhen.__members__.values():
        choices = ", ".join(repr(str(when)) for when in FollowWhen)
        raise JobValidationError("then_when", f"{then_when!r} is not one of {choices}")


def child_id(parent_id: str, position: int) -> str:
    """The id of the child a handler submits at ``position`` (0, 1, ... in the order submitted)."""
    return derived_id(parent_id, f"child/{position}")


def child_swarm_id(parent_id: str, position: int) -> str:
    """The id of the swarm a handler submits whose first member takes ``position``."""
    return derived_id(parent_id, f"swarm/{position}")


def follow_up_id(swarm_id: str) -> str:
    """The id of a swarm's follow-up."""
    return derived_id(swarm_id, "then")


def draft_follow_up(
    then: Mapping[str, Any],
    *,
    swarm_id: str,
    then_when: str,
    traceparent: str | None,
    now: float,
    parent_id: str | None = None,
) -> Job:
    """The follow-up of swarm ``swarm_id`` from its spec (checked by `swarmd.model.seal` after);
    an error names the field as ``then.<field>``."""
    if not isinstance(then, Mapping):
        raise JobValidationError("then", f"a job spec (agent, gid, payload, ...), not {type(then).__name__}")
    try:
        return draft_spec(
            then,
            job_id=follow_up_id(swarm_id),
            allowed=DERIVED_SPEC_KEYS,
            traceparent=traceparent,
            now=now,
            follows=swarm_id,
            follow_when=None if then_when == FollowWhen.ALWAYS else then_when,
            parent_id=parent_id,
        )
    except JobValidationError as exc:
        raise JobValidationError(f"then.{exc.field}", exc.reason) from None


def plan_follow_up(
    then: Mapping[str, Any],
    *,
    swarm_id: str,
    size: int,
    then_when: str,
    traceparent: str | None,
    now: float,
    parent_id: str | None = None,
    max_payload_bytes: int = MAX_PAYLOAD_BYTES,
) -> SwarmPlan:
    """The `SwarmPlan` of a swarm of ``size`` members with follow-up ``then``, sealed."""
    draft = draft_follow_up(
        then, swarm_id=swarm_id, then_when=then_when, traceparent=traceparent, now=now, parent_id=parent_id
    )
    try:
        (job,) = seal([draft], max_payload_bytes=max_payload_bytes)
    except JobValidationError as exc:
        raise JobValidationError(f"then.{exc.field}", exc.reason) from None
    return SwarmPlan(swarm_id=swarm_id, size=size, then=job)
