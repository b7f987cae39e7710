"""Archive segments of the ledger: write them durably, read them back, verify them with the live store.

A segment holds a contiguous range of entries, ``first`` to ``last``, as gzip-compressed JSON
lines (one entry per line: index, job_id, prev_hash, hash and the record's exact bytes as
text), in a file named ``ledger-FIRST-LAST.jsonl.gz`` (indices zero-padded to 12 digits, so that
names sort in chain order). A segment is written to a temporary file, fsynced, renamed into
place, and the directory fsynced: a crash leaves either no segment or a whole one.

The live store records the anchor (index and hash of the last archived entry) in the same
transaction that forgets the entries, after the segment is durable. So the anchor is the
authority: a segment, or the part of one, beyond the anchor is the leftover of an archive that
crashed before its commit (its entries are still live); readers ignore it, and the next archive
removes it (`remove_uncommitted`) before writing its own.

Pure file work: nothing here touches a backend.
"""

from __future__ import annotations

import gzip
import os
import re
import signal
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgspec

from swarmd.errors import ArchiveError
from swarmd.ledger.chain import Anchor, StoredEntry, VerifyReport, verify

#: Test hook: ``POINT:N`` kills this process (SIGKILL, as ``kill -9``) the Nth time archiving
#: reaches POINT (`crash_point`); the crash tests use it to stop an archive at chosen steps.
CRASH_ENV: Final = "SWARMD_TEST_ARCHIVE_CRASH"
_reached: dict[str, int] = {}
SEGMENT_PATTERN: Final = re.compile(r"^ledger-(\d{12})-(\d{12})\.jsonl\.gz\Z")
#: gzip level: segments are written by the daemon's housekeeping, beside the hot path, and read
#: rarely. Level 1 measured 3.3 us of CPU an entry against 9.2 at zlib's default 6, for
#: segments 9% larger (73 against 67 bytes an entry).
COMPRESSION_LEVEL: Final = 1


class _Line(msgspec.Struct, frozen=True):
    index: int
    job_id: str | None
    prev_hash: str
    hash: str
    record: str


_encode_lines: Final = msgspec.json.Encoder().encode_lines
_decode: Final = msgspec.json.Decoder(_Line).decode


@dataclass(frozen=True, slots=True)
class Segment:
    """One segment file and the range of indices its name says it holds."""

    path: Path
    first: int
    last: int


def crash_point(name: str) -> None:
    """Die here, as ``kill -9`` would make it, if `CRASH_ENV` asks for this point now."""
    wanted = os.environ.get(CRASH_ENV)
    if not wanted:
        return
    point, _, count = wanted.partition(":")
    if point != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if str(_reached[name]) == count:
        os.kill(os.getpid(), signal.SIGKILL)


def segment_name(first: int, last: int) -> str:
    return f"ledger-{first:012d}-{last:012d}.jsonl.gz"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prepare_dir(directory: Path) -> Path:
    """Create the archive directory (0700) if needed; `ArchiveError` if it cannot be used."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ArchiveError(str(directory), f"cannot create the archive directory: {exc.strerror}") from None
    if not directory.is_dir():
        raise ArchiveError(str(directory), "is not a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ArchiveError(str(directory), "is not writable")
    return directory


def write_segment(directory: Path, entries: Sequence[StoredEntry]) -> Path:
    """Write ``entries`` (contiguous, in index order) as one segment, durably; return its path.

    Temp file, fsync, rename, fsync of the directory: a crash leaves no partial segment under a
    segment's name. A segment of the same range already there (an archive that crashed before
    its commit) is replaced by this one, which holds the same entries.
    """
    if not entries:
        raise ValueError("a segment holds at least one entry")
    first, last = entries[0].index, entries[-1].index
    if last - first + 1 != len(entries):
        raise ValueError(f"entries {first}..{last} are not contiguous")
    final = directory / segment_name(first, last)
    lines: list[_Line] = []
    for entry in entries:
        try:
            text = entry.record.decode("utf-8")
        except UnicodeDecodeError:
            raise ArchiveError(f"ledger entry {entry.index}", "record is not UTF-8: verify the ledger") from None
        lines.append(_Line(entry.index, entry.job_id, entry.prev_hash, entry.hash, text))
    # One encode and one compress for the whole segment (a few MB): per line, the two calls
    # into GzipFile cost more than the compression itself.
    data = gzip.compress(_encode_lines(lines), compresslevel=COMPRESSION_LEVEL, mtime=0)
    temp = directory / f".{final.name}.{os.getpid()}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as raw:
            raw.write(data)
            raw.flush()
            os.fsync(raw.fileno())
        crash_point("segment_temp")
        os.replace(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(directory)
    return final


def segments(directory: Path) -> list[Segment]:
    """The segments in ``directory``, in chain order (files of other names are not looked at)."""
    if not directory.is_dir():
        raise ArchiveError(str(directory), "no such archive directory")
    found: list[Segment] = []
    for path in directory.iterdir():
        match = SEGMENT_PATTERN.match(path.name)
        if match:
            found.append(Segment(path, int(match.group(1)), int(match.group(2))))
    return sorted(found, key=lambda segment: (segment.first, segment.last))


def read_segment(path: Path) -> Iterator[StoredEntry]:
    """The entries of one segment, as stored; `ArchiveError` naming the file and line if unreadable."""
    try:
        with gzip.open(path, "rb") as lines:
            for number, line in enumerate(lines, start=1):
                try:
                    item = _decode(line)
                except msgspec.DecodeError as exc:
                    raise ArchiveError(f"{path}:{number}", f"not a ledger entry: {exc}") from None
                record = item.record.encode("utf-8", "surrogateescape")
                yield StoredEntry(item.index, item.job_id, item.prev_hash, item.hash, record)
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise ArchiveError(str(path), f"cannot read the segment: {exc}") from None


def archived_entries(directory: Path, through: int) -> Iterator[StoredEntry]:
    """Every archived entry up to index ``through`` (the live store's anchor), in order. What
    lies beyond the anchor was not committed: it is not read."""
    for segment in segments(directory):
        if segment.first > through:
            return
        for entry in read_segment(segment.path):
            if entry.index > through:
                return
            yield entry


def remove_uncommitted(directory: Path, anchor: Anchor | None) -> list[Path]:
    """Remove what an archive that crashed before its commit left: segments that start past the
    anchor (their entries are still live) and temporary files. Returns what was removed."""
    through = -1 if anchor is None else anchor.index
    removed = [segment.path for segment in segments(directory) if segment.first > through]
    removed.extend(path for path in directory.glob(".ledger-*.tmp"))
    for path in removed:
        path.unlink(missing_ok=True)
    if removed:
        _fsync_dir(directory)
    return removed


def verify_with_archive(directory: Path, anchor: Anchor | None, live: Iterable[StoredEntry]) -> VerifyReport:
    """Verify the archived entries (up to ``anchor``) and the live ones (after it) as ONE chain,
    from index 0: a missing or altered segment, or a live store that does not follow its
    archive, is reported like any other break. A job id appearing twice anywhere is one."""

    def chain() -> Iterator[StoredEntry]:
        if anchor is not None:
            yield from archived_entries(directory, anchor.index)
        yield from live

    return verify(chain())
