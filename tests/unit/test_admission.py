"""Admission's answers to an idle puller: which agents to leave out, and when to look again.

An agent excluded at the last reserve must not wait for the poll interval once it could run:
its breaker half-opened, its tokens refilled, or (no time to wait for) a slot of its own freed.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from swarmd.config import Settings
from swarmd.policies.admission import Admission
from swarmd.registry import AgentPolicy, JobContext, Registry
from swarmd.telemetry.metrics import Metrics


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def handler(ctx: JobContext, payload: Any) -> None:
    return None


def make(clock: Clock, **policy: Any) -> Admission:
    registry = Registry()
    registry.register("a", handler, AgentPolicy(**policy))
    registry.register("b", handler)
    settings = Settings(breaker_failures=1, breaker_cooldown=10.0)
    return Admission(registry, settings, Metrics(CollectorRegistry(), agents=registry.names()), clock=clock)


def test_an_open_breaker_is_waited_for_and_its_half_opening_since_the_reserve_is_due_at_once() -> None:
    clock = Clock()
    admission = make(clock)
    admission.gates["a"].breaker.record_failure()
    assert admission.blocked_agents() == ["a"]
    assert admission.soonest_unblock() == 10.0
    clock.now += 10.0  # the cooldown ends between the reserve and the idle wait
    assert admission.soonest_unblock() == 0.0
    assert admission.blocked_agents() == []
    assert admission.soonest_unblock() is None


def test_tokens_refilled_since_the_reserve_are_due_at_once() -> None:
    clock = Clock()
    admission = make(clock, rate=2.0, burst=1)
    bucket = admission.gates["a"].bucket
    assert bucket is not None and bucket.try_take()
    assert admission.blocked_agents() == ["a"]
    assert admission.soonest_unblock() == 0.5
    clock.now += 0.5
    assert admission.soonest_unblock() == 0.0
    assert admission.blocked_agents() == []
    assert admission.soonest_unblock() is None


def test_an_agent_at_its_own_limit_waits_for_a_slot_not_a_time() -> None:
    clock = Clock()
    admission = make(clock, concurrency=1)
    assert not admission.waiting_for_slot()
    admission.gates["a"].running = 1
    assert admission.blocked_agents() == ["a"]
    assert admission.waiting_for_slot()
    assert admission.soonest_unblock() is None  # no timer: its freed slot wakes the puller
    admission.gates["a"].running = 0  # a job ended after the reserve
    assert not admission.waiting_for_slot()
    assert admission.soonest_unblock() == 0.0
