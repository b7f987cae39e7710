"""What a worker tells /healthz and /readyz: plain values the loop updates, the HTTP thread reads."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(slots=True)
class Health:
    """Read by the HTTP thread: plain values the loop updates."""

    last_tick: float = field(default_factory=time.monotonic)
    commit_error: str | None = None
    backend_error: str | None = None
    draining: bool = False
    started: bool = False
