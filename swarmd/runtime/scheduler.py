"""The daemon's scheduler: fires the ticks of its schedules (swarmd.schedules) as jobs.

Each tick becomes one ordinary job whose idempotency key is ``schedule:<name>:<tick>``: a
second submit of that tick (another daemon on the same Redis, this daemon after a restart)
returns the first job's id and writes nothing. After the submit the store remembers the tick
and its job (`QueueBackend.record_tick`), so a daemon starting later knows what it missed:

- at the start, per schedule, the ticks between the last one remembered and now are handled
  as its ``catch_up`` says (`Schedule.missed`); a schedule never fired before misses nothing;
- then each tick is fired when it comes; if the store cannot take it (Redis down, disk full)
  the tick stays pending and is tried again every `RETRY_SECONDS`, oldest first, the latest
  `MAX_CATCH_UP` at most.

A tick whose job the store refuses for good (a JobValidationError) is logged and skipped,
never retried forever and never a crash. Several daemons fire the same ticks on purpose: no
leader is needed, since the idempotency key makes the second submit a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import structlog

from swarmd.config import Settings, configured_schedules
from swarmd.errors import BackendUnavailable, ConfigError, JobValidationError, error_text
from swarmd.model import new_job
from swarmd.queue.base import QueueBackend
from swarmd.registry import Registry
from swarmd.schedules import MAX_CATCH_UP, Schedule
from swarmd.telemetry.metrics import Metrics

log = structlog.get_logger("swarmd.scheduler")

#: Seconds between two tries of a tick the store could not take.
RETRY_SECONDS: Final = 1.0
#: Longest sleep between two looks at the wall clock (a clock set forward is noticed by then).
MAX_SLEEP: Final = 30.0


def _iso(tick: float) -> str:
    return datetime.fromtimestamp(tick, UTC).isoformat()


def resolve_schedules(settings: Settings, registry: Registry) -> list[Schedule]:
    """The schedules a daemon fires: those of `@agent(..., schedule=...)`, then the ``[[schedule]]``
    tables (one with the name of an agent's schedule replaces it). ConfigError, before anything is
    written, for a table naming an agent nobody registered or a payload over max_payload_bytes."""
    chosen = {schedule.name: schedule for schedule in registry.schedules()}
    for position, schedule in enumerate(configured_schedules(settings)):
        where = f"schedule[{position}]"
        if schedule.agent not in registry:
            raise ConfigError(
                f"{where}.agent", f"unknown agent {schedule.agent!r} (this daemon loads: {', '.join(registry.names())})"
            )
        chosen[schedule.name] = schedule
    for schedule in chosen.values():
        try:
            new_job(
                agent=schedule.agent,
                gid=schedule.gid,
                payload=schedule.payload,
                idempotency_key=schedule.key(0.0),
                max_payload_bytes=settings.max_payload_bytes,
            )
        except JobValidationError as exc:
            raise ConfigError(f"schedule {schedule.name!r}", f"its job would be refused: {exc}") from None
    return sorted(chosen.values(), key=lambda schedule: schedule.name)


class Scheduler:
    """Fires ``schedules`` into ``backend``; `run` until cancelled."""

    def __init__(
        self,
        backend: QueueBackend,
        schedules: Sequence[Schedule],
        metrics: Metrics | None = None,
        *,
        clock: Callable[[], float] = time.time,
        max_payload_bytes: int | None = None,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        self.backend = backend
        self.schedules = {schedule.name: schedule for schedule in schedules}
        self.metrics = metrics
        self.clock = clock
        self.max_payload_bytes = max_payload_bytes
        self.retry_seconds = retry_seconds
        self._next: dict[str, float] = {}
        self._pending: dict[str, deque[float]] = {name: deque(maxlen=MAX_CATCH_UP) for name in self.schedules}
        #: Ticks fired (submitted and remembered) by this scheduler, for tests and logs.
        self.fired = 0
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """End `run` at its next step, with no tick half fired. The daemon also cancels the
        task; this holds even if a client library swallows that cancellation."""
        self._stopping.set()

    async def start(self) -> None:
        """Publish the schedules, read what the store remembers, queue the missed ticks."""
        await self.backend.publish_schedules(list(self.schedules.values()))
        known = {state.name: state for state in await self.backend.schedule_states()}
        now = self.clock()
        for name, schedule in self.schedules.items():
            state = known.get(name)
            last = state.last_tick if state is not None else None
            missed = schedule.missed(last, now)
            self._pending[name].extend(missed)
            self._next[name] = schedule.next_tick(max(now, last or now))
            if self.metrics is not None:
                self.metrics.set_schedule_ticks(name, last=last, next_tick=self._next[name])
            log.info(
                "schedule_started",
                schedule=name,
                cron=schedule.cron,
                timezone=schedule.timezone,
                catch_up=schedule.catch_up.value,
                last_tick=_iso(last) if last is not None else None,
                missed_fired=len(missed),
                next_tick=_iso(self._next[name]),
            )

    async def run(self) -> None:
        """`start`, then fire ticks as they come, until cancelled. A store that is unavailable
        at the start is waited for, as any other moment."""
        if not self.schedules:
            return
        delay = 0.0
        while not await self._stopped_within(delay):
            try:
                await self.start()
                break
            except BackendUnavailable as exc:
                log.warning("schedule_start_deferred", error=error_text(exc), retry_s=self.retry_seconds)
                delay = self.retry_seconds
        else:
            return
        delay = 0.0
        while not await self._stopped_within(delay):
            delay = await self.step()

    async def _stopped_within(self, seconds: float) -> bool:
        """Wait ``seconds`` or until `stop`; whether the scheduler is stopping."""
        if seconds > 0 and not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), seconds)
        return self._stopping.is_set()

    async def step(self) -> float:
        """Fire every tick due by now; return the seconds until the next one is due."""
        now = self.clock()
        for name, schedule in self.schedules.items():
            while self._next[name] <= now:
                self._pending[name].append(self._next[name])
                self._next[name] = schedule.next_tick(self._next[name])
        stalled = False
        for name, pending in self._pending.items():
            while pending and not stalled and not self._stopping.is_set():
                try:
                    await self._fire(self.schedules[name], pending[0])
                except BackendUnavailable as exc:
                    log.warning("schedule_tick_deferred", schedule=name, tick=_iso(pending[0]), error=error_text(exc))
                    stalled = True
                    break
                except JobValidationError as exc:
                    log.error("schedule_tick_refused", schedule=name, tick=_iso(pending[0]), error=error_text(exc))
                pending.popleft()
        if stalled:
            return self.retry_seconds
        wait = min(self._next.values()) - self.clock()
        return min(max(wait, 0.001), MAX_SLEEP)

    async def _fire(self, schedule: Schedule, tick: float) -> None:
        fields: dict[str, Any] = {"max_payload_bytes": self.max_payload_bytes} if self.max_payload_bytes else {}
        job = new_job(
            agent=schedule.agent,
            gid=schedule.gid,
            payload=schedule.payload,
            idempotency_key=schedule.key(tick),
            now=self.clock(),
            **fields,
        )
        [job_id] = await self.backend.submit([job])
        await self.backend.record_tick(schedule.name, tick, job_id)
        self.fired += 1
        if self.metrics is not None:
            self.metrics.set_schedule_ticks(schedule.name, last=tick, next_tick=self._next[schedule.name])
        log.info(
            "schedule_fired",
            schedule=schedule.name,
            tick=_iso(tick),
            job_id=job_id,
            agent=schedule.agent,
            gid=schedule.gid,
            submitted=job_id == job.id,  # False: another daemon (or an earlier run) submitted this tick
        )
