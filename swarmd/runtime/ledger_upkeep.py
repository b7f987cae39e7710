"""The ledger's upkeep in a running daemon: checkpoints logged, old entries archived.

- Every ``checkpoint_interval`` it logs ``ledger_checkpoint`` with the index and hash of the
  last entry (and ``anchor="INDEX:HASH"``, ready for ``swarmd ledger verify --anchor``): the
  journal keeps it outside the state directory, so a chain rewritten consistently in the state
  dir no longer passes through it.
- Every ``checkpoint_interval`` (at least every `ARCHIVE_EVERY` seconds), when
  ``ledger_retention`` or ``ledger_max_entries`` is set, it
  archives (or, with ``archive = false``, drops) what they no longer keep live, at most
  `CHUNKS_PER_ROUND` segments of `swarmd.queue.archiving.CHUNK` entries a round: the segment
  is written on another thread, and its entries are forgotten in short transactions of
  `swarmd.queue.archiving.FORGET_STEP` entries on the backend's thread, between the hot path's
  commits.

It runs as its own task in the worker's group, so a slow archive never delays lease renewals.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Final

import structlog

from swarmd.config import Settings, archived_id_ttl_seconds, duration_seconds
from swarmd.errors import ArchiveError, BackendUnavailable, error_text
from swarmd.queue.archiving import ArchiveRun, Selection, archive_ledger
from swarmd.queue.base import QueueBackend
from swarmd.runtime.cancelling import raise_if_cancelling

log = structlog.get_logger("swarmd.ledger")

#: Seconds between two archiving rounds (when a retention is configured).
ARCHIVE_EVERY: Final = 10.0
#: Most chunks one round archives; a backlog is worked off over the following rounds.
CHUNKS_PER_ROUND: Final = 4


class LedgerUpkeep:
    """Checkpoints and retention for one daemon's backend."""

    def __init__(self, backend: QueueBackend, settings: Settings, archive_dir: Path | None) -> None:
        self.backend = backend
        self.checkpoint_every = duration_seconds(settings.checkpoint_interval)
        self.retention = None if settings.ledger_retention is None else duration_seconds(settings.ledger_retention)
        self.max_entries = settings.ledger_max_entries
        #: How long archived job ids stay refused (``archived_id_ttl``).
        self.remember_for = archived_id_ttl_seconds(settings)
        #: None: drop entries past the retention instead of archiving them (``archive = false``).
        self.archive_dir = archive_dir
        #: At each checkpoint, and at least every ARCHIVE_EVERY seconds.
        self.archive_every = min(ARCHIVE_EVERY, self.checkpoint_every)
        self._last_checkpoint: str | None = None
        self._held_at: int | None = None

    @property
    def retains(self) -> bool:
        return self.retention is not None or self.max_entries is not None

    def selection(self, now: float) -> Selection:
        return Selection(
            finished_before=None if self.retention is None else now - self.retention, keep=self.max_entries
        )

    async def checkpoint(self) -> None:
        """Log the current checkpoint (unless the ledger did not move since the last one)."""
        tail = await self.backend.ledger_tail(1)
        if not tail:
            return
        entry = tail[-1]
        anchor = f"{entry.index}:{entry.hash}"
        if anchor != self._last_checkpoint:
            self._last_checkpoint = anchor
            log.info("ledger_checkpoint", index=entry.index, hash=entry.hash, anchor=anchor)

    async def archive_round(self, now: float | None = None) -> ArchiveRun:
        run = await archive_ledger(
            self.backend,
            self.selection(time.time() if now is None else now),
            self.archive_dir,
            max_chunks=CHUNKS_PER_ROUND,
            remember_for=self.remember_for,
        )
        if run.entries:
            log.info(
                "ledger_archived",
                entries=run.entries,
                anchor=str(run.anchor),
                segments=[path.name for path in run.segments],
                dropped=self.archive_dir is None,
            )
        if run.held_at is not None and run.held_at != self._held_at:  # said once per place it holds
            log.info("ledger_archive_held", before_index=run.held_at, reason="a swarm's follow-up is pending")
        self._held_at = run.held_at
        return run

    async def run(self) -> None:
        """Until cancelled: a checkpoint at start and every interval, an archive round every
        `ARCHIVE_EVERY` seconds. Errors are logged and the next round tries again."""
        next_checkpoint = next_archive = time.monotonic()
        while True:
            now = time.monotonic()
            try:
                if now >= next_checkpoint:
                    next_checkpoint = now + self.checkpoint_every
                    await self.checkpoint()
                if self.retains and now >= next_archive:
                    next_archive = now + self.archive_every
                    await self.archive_round()
            except BackendUnavailable as exc:
                log.warning("ledger_upkeep_paused", error=str(exc))
            except ArchiveError as exc:  # another daemon (Redis) archived first: next round
                log.warning("ledger_archive_skipped", error=str(exc))
            except Exception as exc:
                log.error("ledger_upkeep_failed", error=error_text(exc))
            raise_if_cancelling()  # a cancel the backend's client swallowed must still end the loop
            wake = min(next_checkpoint, next_archive if self.retains else next_checkpoint)
            await asyncio.sleep(max(0.05, wake - time.monotonic()))
