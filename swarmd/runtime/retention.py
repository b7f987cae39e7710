"""Bounded state: the daemon forgets what finished jobs leave behind, and says how big its state is.

`ResultExpiry` runs beside the worker. Every pass it asks the backend to forget, in chunks of
`EXPIRE_CHUNK` (one short transaction or script each, the loop yielding between them), the
idempotency keys (and on Redis the member sets of finished swarms) of jobs that finished more
than ``result_ttl`` ago; after a pass that forgot many, it has SQLite give the WAL's space back.
In the same pass it forgets the archived job ids whose horizon (``archived_id_ttl``, see
swarmd.storage.horizon) has passed, again `EXPIRE_CHUNK` at a time, each chunk one short
transaction on the backend's thread (a range delete on ``archived_ids``' primary key; Redis
expires its generation sets itself). It then refreshes the size metrics from cached reads
(`measure_state`), so the scrape thread never touches the event loop or the database.

`RetentionSwitch` is the one object that says what "retention on" means (today: result_ttl
expiry and the archived ids' horizon; ledger retention joins it at merge); `swarmd bench soak`
compares on against off.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import structlog

from swarmd.config import Settings, result_ttl_seconds
from swarmd.errors import BackendUnavailable, error_text
from swarmd.queue.base import QueueBackend
from swarmd.runtime.cancelling import raise_if_cancelling
from swarmd.telemetry.metrics import Metrics

log = structlog.get_logger("swarmd.retention")

#: Most keys one expiry step forgets: one transaction / script of a few milliseconds (500: about
#: 2 ms on a 2-vCPU VM, 1,000 about 3.7; `swarmd_state_upkeep_step_seconds{step="expire"}`).
EXPIRE_CHUNK: Final = 500
#: Seconds between passes (shorter for a result_ttl under four times this: a quarter of it).
PASS_EVERY: Final = 60.0
#: Shortest pass interval, whatever the result_ttl.
MIN_PASS_EVERY: Final = 0.25
#: Keys forgotten in one pass after which SQLite's WAL is checkpointed and truncated.
GIVE_BACK_AFTER: Final = 10_000
#: The archive directory in the state directory, unless the settings name another.
ARCHIVE_DIR_NAME: Final = "archive"
#: The SQLite file and its WAL (as `swarmd.queue.sqlite.backend` names them).
_DATABASE: Final = "swarmd.db"
_WAL: Final = "swarmd.db-wal"


@dataclass(frozen=True, slots=True)
class RetentionSwitch:
    """What retention runs: the one switch `swarmd bench soak` turns on and off.

    ``expire_results``: forget finished jobs' keys after ``result_ttl``.
    ``expire_archived_ids``: forget archived job ids after ``archived_id_ttl``. Ledger
    retention adds its own field here when it merges.
    """

    expire_results: bool = True
    expire_archived_ids: bool = True

    @classmethod
    def off(cls) -> RetentionSwitch:
        return cls(expire_results=False, expire_archived_ids=False)


@dataclass(frozen=True, slots=True)
class StateSize:
    """Bytes of state by part (``database``, ``wal``, ``archive``) and bytes free on its file system."""

    parts: dict[str, int]
    free: int

    @property
    def total(self) -> int:
        return sum(self.parts.values())


def archive_dir(settings: Settings, state_dir: Path) -> Path:
    """Where archived ledger segments go: the ``archive_dir`` setting when this build has it
    (relative to the state directory), else ``<state_dir>/archive``."""
    named = getattr(settings, "archive_dir", None)
    if not named:
        return state_dir / ARCHIVE_DIR_NAME
    path = Path(str(named))
    return path if path.is_absolute() else state_dir / path


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _tree_size(root: Path) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            total += _file_size(Path(folder) / name)
    return total


def measure_state(state_dir: Path, archive: Path) -> StateSize:
    """The sizes of the state's parts on disk and the bytes free for the daemon's user (a
    Redis backend keeps its state in Redis: its database and WAL read 0 here)."""
    stat = os.statvfs(state_dir)
    return StateSize(
        parts={
            "database": _file_size(state_dir / _DATABASE),
            "wal": _file_size(state_dir / _WAL),
            "archive": _tree_size(archive),
        },
        free=stat.f_bavail * stat.f_frsize,
    )


async def expire_results(backend: QueueBackend, older_than: float, *, chunk: int = EXPIRE_CHUNK) -> int:
    """Forget everything expired, one chunk at a time, letting the loop run between chunks;
    return how many keys (and swarms) were forgotten."""
    total = 0
    while True:
        forgotten = await backend.expire_finished(older_than, chunk)
        total += forgotten
        if forgotten < chunk:
            return total
        await asyncio.sleep(0)


async def expire_archived_ids(backend: QueueBackend, *, now: float | None = None, chunk: int = EXPIRE_CHUNK) -> int:
    """Forget every archived job id past its horizon at ``now`` (None: the current time), one
    chunk at a time, letting the loop run between chunks; return how many were forgotten."""
    total = 0
    while True:
        forgotten = await backend.expire_archived_ids(chunk, now=now)
        total += forgotten
        if forgotten < chunk:
            return total
        await asyncio.sleep(0)


class ResultExpiry:
    """The daemon's retention loop for finished jobs (see the module docstring)."""

    def __init__(
        self,
        backend: QueueBackend,
        settings: Settings,
        metrics: Metrics,
        state_dir: Path,
        switch: RetentionSwitch | None = None,
    ) -> None:
        self.backend = backend
        self.metrics = metrics
        self.state_dir = state_dir
        self.archive = archive_dir(settings, state_dir)
        self.switch = switch or RetentionSwitch()
        self.ttl = result_ttl_seconds(settings)
        self.every = max(MIN_PASS_EVERY, min(PASS_EVERY, self.ttl / 4))

    async def run(self) -> None:
        """Pass after pass until cancelled; a pass that fails is logged, counted and retried."""
        while True:
            await self.run_once()
            raise_if_cancelling()  # a cancel the backend's client swallowed must still end the loop
            await asyncio.sleep(self.every)

    async def run_once(self) -> int:
        """One pass: expire, give space back after a large one, refresh the size metrics."""
        forgotten = 0
        try:
            if self.switch.expire_results:
                forgotten = await expire_results(self.backend, self.ttl)
                self.metrics.finished_expired.inc(forgotten)
            ids = await expire_archived_ids(self.backend) if self.switch.expire_archived_ids else 0
            if forgotten + ids >= GIVE_BACK_AFTER:
                truncated = await self.backend.give_back_space()
                log.info("finished_jobs_expired", forgotten=forgotten, archived_ids=ids, wal_truncated=truncated)
            if self.switch.expire_results or self.switch.expire_archived_ids:
                self.metrics.retention_ran(True)
            await self.refresh_metrics()
        except BackendUnavailable as exc:
            self.metrics.retention_ran(False)
            log.warning("retention_failed", error=str(exc))
        except Exception as exc:
            self.metrics.retention_ran(False)
            log.error("retention_failed", error=error_text(exc))
        return forgotten

    async def refresh_metrics(self) -> None:
        """Sizes on disk, and the live ledger's length and oldest entry."""
        size = await asyncio.to_thread(measure_state, self.state_dir, self.archive)
        self.metrics.set_state_bytes(size.parts, size.free)
        first = await self.backend.ledger_entries(0, 1)
        last = await self.backend.ledger_tail(1)
        if not first or not last:
            self.metrics.set_ledger_extent(0, None)
            return
        finished_at = first[0].decoded().get("finished_at")
        oldest = float(finished_at) if isinstance(finished_at, (int, float)) else None
        self.metrics.set_ledger_extent(last[-1].index - first[0].index + 1, oldest)
