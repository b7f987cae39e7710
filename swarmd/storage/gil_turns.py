"""Short turns of the GIL while a housekeeping step runs on a backend's thread.

Every SQLite statement lets go of the GIL around ``sqlite3_step`` and must take it back from
whichever thread holds it then: on a busy daemon, the event loop. A thread that asks for the GIL
waits the interpreter's switch interval before the holder is told to let go (0.5 ms in ``swarmd
serve``), so a step of ten statements waited several milliseconds for the GIL alone, holding the
backend's thread (and the hot path's commits queued behind it) for as long.

`short_gil_turns` lowers the process's switch interval for as long as a step runs and puts it
back after: the loop is asked to let go sooner only while a step waits, a few milliseconds in a
second, so handlers do not pay for it otherwise (`docs/design/upkeep-holds.md` has the numbers).
Steps of several backends in one process may overlap: the first to start lowers the interval and
the last to end restores it.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

#: The switch interval while a housekeeping step runs, in seconds.
STEP_SWITCH_INTERVAL: Final = 0.00005


class _Turns:
    """How many steps run now, and the interval to restore when the last one ends."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.steps = 0
        self.restore_to = 0.0


_turns = _Turns()


@contextmanager
def short_gil_turns(interval: float = STEP_SWITCH_INTERVAL) -> Iterator[None]:
    """Run the body with the switch interval at most ``interval`` seconds, then restore it."""
    with _turns.lock:
        if _turns.steps == 0:
            _turns.restore_to = sys.getswitchinterval()
            if interval < _turns.restore_to:
                sys.setswitchinterval(interval)
        _turns.steps += 1
    try:
        yield
    finally:
        with _turns.lock:
            _turns.steps -= 1
            if _turns.steps == 0:
                sys.setswitchinterval(_turns.restore_to)
