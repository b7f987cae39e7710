"""What the `swarmd` command writes: JSON lines and readable rows on stdout, notes, warnings
and progress on stderr (stdout stays the data a script reads: one item a line).

Progress is for a person watching: a counter on stderr, rewritten in place, and nothing at all
when stderr is not a terminal (a log file or a pipe gets no carriage returns).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, Final, TextIO, TypeVar

import msgspec

from swarmd.client import JobInfo

T = TypeVar("T")

_json = msgspec.json.Encoder()
#: Least time between two redraws of a progress counter, in seconds.
REDRAW_EVERY: Final = 0.1


def print_json(value: Any, out: TextIO | None = None) -> None:
    """One JSON line on ``out`` (default: the `sys.stdout` of the moment, as `print` writes to)."""
    (out or sys.stdout).write(_json.encode(value).decode() + "\n")


def note(message: str) -> None:
    """``swarmd: note: ...`` on stderr: something worth knowing that is not wrong."""
    print(f"swarmd: note: {message}", file=sys.stderr)


def warn(message: str) -> None:
    """``swarmd: warning: ...`` on stderr: done as asked, but probably not as hoped."""
    print(f"swarmd: warning: {message}", file=sys.stderr)


def plural(count: int, noun: str) -> str:
    """``1 job``, ``2 jobs``, ``0 jobs``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def describe_error(error: dict[str, Any]) -> str:
    """A recorded error, readably: ``Type: message`` (plus what else it says, as key=value;
    its traceback goes on the lines below, see `print_details`)."""
    kind, message = error.get("type"), error.get("message")
    head = ": ".join(str(part) for part in (kind, message) if part is not None)
    rest = " ".join(f"{key}={value}" for key, value in error.items() if key not in ("type", "message", "traceback"))
    return " ".join(part for part in (head, f"({rest})" if rest else "") if part) or "-"


def print_infos(infos: list[JobInfo], as_json: bool) -> None:
    """Jobs, one a line (``--json``: one JSON array)."""
    if as_json:
        print_json([info.as_dict() for info in infos])
        return
    for info in infos:
        detail = info.outcome or info.state
        index = f" ledger={info.ledger_index}" if info.ledger_index is not None else ""
        error = f"  error: {describe_error(info.error)}" if info.error else ""
        waiting = f"  waiting: {info.waiting}" if info.waiting else ""
        violation = f"  IDENTITY VIOLATION: {info.identity_violation}" if info.identity_violation else ""
        print(
            f"{info.job_id}  {detail:<13} agent={info.agent} gid={info.gid} attempt={info.attempt}"
            f"{index}{error}{waiting}{violation}"
        )


def print_family(info: JobInfo) -> None:
    """The lines under one job's row that name its relatives: parent, children, followed swarm."""
    if info.parent_id:
        print(f"  parent: {info.parent_id}")
    if info.follows:
        print(f"  follows swarm: {info.follows}")
    if info.children:
        print(f"  children ({len(info.children)}): " + " ".join(info.children))


def swarm_summary(swarm_id: str, infos: list[JobInfo], follow_up: JobInfo | None) -> str:
    """One line on a swarm: its members by state (a finished one by its outcome) and its follow-up."""
    counts: dict[str, int] = {}
    for info in infos:
        key = info.outcome or info.state
        counts[key] = counts.get(key, 0) + 1
    states = ", ".join(f"{count} {state}" for state, count in sorted(counts.items(), key=lambda item: -item[1]))
    line = f"swarm {swarm_id}: {plural(len(infos), 'member')} ({states})"
    if follow_up is not None:
        line += f"; follow-up {follow_up.job_id} {follow_up.outcome or follow_up.state}"
    return line


def print_details(result: Any, error: dict[str, Any] | None) -> None:
    """The lines under one job's row (``swarmd status JOB_ID``; listings keep one job a line):
    its result (JSON), or its error's traceback, indented."""
    if result is not None:
        print("  result: " + _json.encode(result).decode())
    traceback = (error or {}).get("traceback")
    if isinstance(traceback, str) and traceback:
        print("  " + traceback.rstrip("\n").replace("\n", "\n  "))


class Progress:
    """A counter on stderr for a long operation (``verify: 120000/500000 entries``), redrawn in
    place at most every `REDRAW_EVERY` seconds and wiped at the end; inert off a terminal."""

    def __init__(self, label: str, total: int | None = None, *, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.label = label
        self.total = total
        self.done = 0
        self._drawn_at = -float("inf")
        self._shown = False

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self._drawn_at >= REDRAW_EVERY:
            self._drawn_at = now
            self._draw()

    def _draw(self) -> None:
        total = f"/{self.total}" if self.total is not None else ""
        count = f": {self.done}{total}" if self.done or self.total is not None else " …"
        self.stream.write(f"\r{self.label}{count}\x1b[K")
        self.stream.flush()
        self._shown = True

    def track(self, items: Iterable[T]) -> Iterator[T]:
        """``items``, counted as they pass."""
        for item in items:
            yield item
            self.advance()

    def close(self) -> None:
        """Wipe the counter's line (what follows on stderr starts on a clean line)."""
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
