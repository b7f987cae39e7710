"""Archive, then forget: move the oldest ledger entries to segment files, in bounded chunks.

Each chunk is one segment: the entries are read from the live store, written to a segment and
made durable (`swarmd.ledger.archive.write_segment`), and only then forgotten by the backend,
which deletes them and records the new anchor in one transaction (`QueueBackend.forget_ledger`).
A crash before that commit leaves the entries live and a segment past the anchor, which readers
ignore and the next archive replaces; a crash after it leaves them archived, and the anchor says
so. A segment's entries are forgotten in steps (`FORGET_STEP`), each recording the anchor it
reaches; a crash between two steps leaves the anchor inside the segment, and the next archive
forgets the rest of that segment first. Nothing is lost and nothing is counted twice, at any
point.

Chunks are small (`CHUNK` entries) so that the backend's thread, which also commits the hot
path's outcomes, is never held for long; the daemon's housekeeping archives a few chunks per
round (`max_chunks`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from swarmd.ledger.archive import Segment, crash_point, prepare_dir, remove_uncommitted, segments, write_segment
from swarmd.ledger.chain import Anchor, StoredEntry
from swarmd.queue.base import QueueBackend
from swarmd.storage.horizon import DEFAULT_HORIZON

#: Entries per segment.
CHUNK: Final = 5000
#: Entries per forgetting transaction: a segment's entries are forgotten in steps this size,
#: each its own short transaction (the hot path's commits wait for at most one of them). 200:
#: about 2.5 ms median on a 2-vCPU VM, where 500 held the backend's thread 4.5 ms (and 19 ms
#: median under heavy load; `swarmd_state_upkeep_step_seconds{step="forget"}` measures it).
FORGET_STEP: Final = 200


@dataclass(frozen=True, slots=True)
class Selection:
    """Which of the oldest live entries to archive: all those before index ``before``, finished
    before Unix time ``finished_before``, and beyond the newest ``keep`` (each None: no limit)."""

    before: int | None = None
    finished_before: float | None = None
    keep: int | None = None

    def upper_bound(self, last_index: int | None) -> int | None:
        """The first index NOT to archive, from ``before`` and ``keep`` (None: no bound)."""
        bounds = [b for b in (self.before,) if b is not None]
        if self.keep is not None:
            bounds.append(0 if last_index is None else last_index + 1 - self.keep)
        return min(bounds) if bounds else None


@dataclass(slots=True)
class ArchiveRun:
    """What one `archive_ledger` did."""

    entries: int = 0
    anchor: Anchor | None = None
    segments: list[Path] = field(default_factory=list)
    #: The index archiving stopped before because a swarm's follow-up is pending and reads its
    #: members' outcomes from the live ledger (`QueueBackend.archive_hold`); None: not held.
    held_at: int | None = None

    def summary(self) -> str:
        if not self.entries:
            held = "" if self.held_at is None else f", held before index {self.held_at}: a swarm's follow-up is pending"
            anchor = "" if self.anchor is None else f"anchor {self.anchor.index}"
            said = ", ".join(part for part in (anchor, held.removeprefix(", ")) if part)
            return "nothing to archive" + (f" ({said})" if said else "")
        kept = f"{len(self.segments)} segment(s)" if self.segments else "dropped, no archive"
        held = "" if self.held_at is None else f" (held before index {self.held_at}: a swarm's follow-up is pending)"
        done = f"archived {self.entries} entries through index {self.anchor.index if self.anchor else '-'}: {kept}"
        return done + held


def _finished_at(entry: StoredEntry) -> float | None:
    value = entry.decoded().get("finished_at")
    return float(value) if isinstance(value, int | float) else None


def _take(entries: list[StoredEntry], bound: int | None, finished_before: float | None) -> list[StoredEntry]:
    """The prefix of ``entries`` the selection covers (archiving never skips an entry)."""
    taken: list[StoredEntry] = []
    for entry in entries:
        if bound is not None and entry.index >= bound:
            break
        if finished_before is not None:
            finished = _finished_at(entry)
            if finished is None or finished >= finished_before:
                break
        taken.append(entry)
    return taken


async def archive_ledger(
    backend: QueueBackend,
    selection: Selection,
    to: Path | None,
    *,
    chunk: int = CHUNK,
    max_chunks: int | None = None,
    remember_for: float = DEFAULT_HORIZON,
) -> ArchiveRun:
    """Archive the oldest live entries ``selection`` covers to segments in ``to`` (None: drop
    them, keeping only the anchor and the archived ids), ``chunk`` entries at a time, at most
    ``max_chunks`` chunks; then give the space back. Their job ids stay refused for
    ``remember_for`` seconds (the ``archived_id_ttl`` setting). Returns what was archived."""
    run = ArchiveRun(anchor=await backend.ledger_anchor())
    if to is not None:
        prepare_dir(to)
        await asyncio.to_thread(remove_uncommitted, to, run.anchor)
        unfinished = await asyncio.to_thread(_segment_past, to, run.anchor)
        if unfinished is not None:  # a crash between two forgetting steps: finish that segment
            run.entries += await _forget(backend, run, unfinished.last, remember_for)
    bound: int | None = None
    if selection.keep is not None or selection.before is not None:
        tail = await backend.ledger_tail(1)
        bound = selection.upper_bound(tail[-1].index if tail else None)
    hold = await backend.archive_hold()
    if hold is not None and (bound is None or hold < bound):  # a pending follow-up reads from here on
        bound = hold
    else:
        hold = None
    chunks = 0
    while max_chunks is None or chunks < max_chunks:
        start = 0 if run.anchor is None else run.anchor.index + 1
        entries = await backend.ledger_entries(start, chunk)
        taken = _take(entries, bound, selection.finished_before)
        if not taken:
            break
        if to is not None:
            run.segments.append(await asyncio.to_thread(write_segment, to, taken))
            crash_point("segment_durable")
        run.entries += await _forget(backend, run, taken[-1].index, remember_for)
        chunks += 1
        if len(taken) < len(entries) or len(entries) < chunk:
            break
    if hold is not None and (0 if run.anchor is None else run.anchor.index + 1) == hold:
        run.held_at = hold  # it went as far as the hold: what comes next waits for a follow-up
    if run.entries:
        await backend.reclaim_space()
    return run


async def _forget(backend: QueueBackend, run: ArchiveRun, through: int, remember_for: float) -> int:
    """Forget the live entries up to ``through`` (durably archived, or to be dropped), in steps
    of `FORGET_STEP`, each recording its anchor; return how many were forgotten."""
    start = 0 if run.anchor is None else run.anchor.index + 1
    for step_end in [*range(start + FORGET_STEP - 1, through, FORGET_STEP), through]:
        run.anchor = await backend.forget_ledger(step_end, run.anchor, remember_for=remember_for)
        crash_point("forgotten")
    return through - start + 1


def _segment_past(directory: Path, anchor: Anchor | None) -> Segment | None:
    """The segment whose entries were forgotten only in part (the anchor inside it), if any."""
    if anchor is None:
        return None
    for segment in segments(directory):
        if segment.first <= anchor.index < segment.last:
            return segment
    return None


def older_than(seconds: float, now: float | None = None) -> Selection:
    """The entries finished more than ``seconds`` ago."""
    return Selection(finished_before=(time.time() if now is None else now) - seconds)
