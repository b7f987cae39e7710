"""Crash records: which jobs were running each time the daemon crashed, to stop poison jobs.

When an exception escapes the worker (a crash: the daemon exits 1), the daemon writes, before
it exits, one record naming the jobs that were running then. A job named in ``poison_after``
records is a *poison job*: the next time it is reserved it is dead-lettered ("poison: running
when the daemon crashed N times") instead of run, so that one bad job cannot crash the daemon
in a loop. Until then a job named in any record is a *suspect*, and suspects run one at a time
(`JobRunner` gives a suspect back for a moment while another runs), so that an innocent job
that happened to run beside a poison job is not named again with it; a suspect whose run ends
without a crash is cleared from every record.

A ``kill -9``, an OOM kill or the systemd watchdog leaves no record and counts for nothing: the
record is written only by the daemon itself, on an exception it caught.

Where: a small JSON file, ``crashes.json`` in the state directory, for both backends. It is
written when the queue may be the very thing that failed, so it must not depend on the queue;
it is local to the daemon that crashed, which is the one whose restart loop it must break
(with Redis, another daemon that takes the job over keeps records of its own, so a poison job
moving between daemons is dead-lettered after ``poison_after`` crashes of one of them). It is
replaced atomically (a temporary file, fsync, rename), opened never through a symlink
(`swarmd.storage.files.open_private`), and holds at most MAX_RECORDS records. The worker
processes of one daemon (``workers`` > 1) share it: each change (read, modify, replace) holds
an exclusive flock on ``crashes.lock``, so two workers crashing at once both leave a record.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import msgspec
import structlog

from swarmd.errors import StateDirError, error_text
from swarmd.storage.files import check_file, open_private

__all__ = ["CRASHES_NAME", "MAX_RECORDS", "CrashRecord", "CrashRecords"]

log = structlog.get_logger("swarmd.daemon")

CRASHES_NAME: Final = "crashes.json"
LOCK_NAME: Final = "crashes.lock"
#: Records kept (the oldest are dropped): a job is judged on the last few crashes only.
MAX_RECORDS: Final = 32
#: Most job ids one record names.
MAX_JOBS: Final = 10_000


class CrashRecord(msgspec.Struct, frozen=True):
    """One crash: when, which process, what escaped, and the jobs running then."""

    at: float
    pid: int
    error: str
    jobs: list[str]


class _File(msgspec.Struct):
    crashes: list[CrashRecord] = msgspec.field(default_factory=list)


_decode = msgspec.json.Decoder(_File).decode
_encode = msgspec.json.Encoder().encode


class CrashRecords:
    """The crash records of one state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / CRASHES_NAME
        self.lock_path = state_dir / LOCK_NAME

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        """Hold the records' lock while they are read, changed and replaced."""
        fd = open_private(self.lock_path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing it releases the flock

    def load(self) -> list[CrashRecord]:
        """Every record kept; none if the file is absent, and none (with a warning) if it is
        unreadable: a damaged record must not stop the daemon from starting."""
        try:
            check_file(self.path)
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except (OSError, StateDirError) as exc:
            log.warning("crash_records_unreadable", path=str(self.path), error=error_text(exc))
            return []
        try:
            return _decode(data).crashes
        except msgspec.DecodeError as exc:
            log.warning("crash_records_unreadable", path=str(self.path), error=error_text(exc))
            return []

    def counts(self) -> dict[str, int]:
        """Job id -> how many records name it."""
        counts: dict[str, int] = {}
        for record in self.load():
            for job_id in set(record.jobs):
                counts[job_id] = counts.get(job_id, 0) + 1
        return counts

    def record(self, jobs: list[str], error: BaseException) -> None:
        """Add a record of a crash now, with the jobs running (synchronous: the daemon is
        going down, and nothing else runs)."""
        with self._changing():
            records = self.load()
            records.append(CrashRecord(time.time(), os.getpid(), error_text(error)[:500], jobs[:MAX_JOBS]))
            self._write(records[-MAX_RECORDS:])
        log.error("crash_recorded", path=str(self.path), running=jobs[:100], crashes=len(records))

    def clear(self, job_id: str) -> None:
        """Remove a job from every record (it ended without a crash, or was dead-lettered)."""
        with self._changing():
            records = self.load()
            kept = [
                msgspec.structs.replace(record, jobs=[other for other in record.jobs if other != job_id])
                for record in records
            ]
            kept = [record for record in kept if record.jobs]
            if kept != records:
                self._write(kept)

    def _write(self, records: list[CrashRecord]) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        with os.fdopen(open_private(temporary, os.O_WRONLY | os.O_TRUNC), "wb") as handle:
            handle.write(_encode(_File(records)))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        with contextlib.suppress(OSError):  # the rename itself made durable, where supported
            directory = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
