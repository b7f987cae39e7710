"""What a daemon with several workers (``--workers N``) shows from outside: its log events,
its workers' pids, and its metrics by worker."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import msgspec
from prometheus_client.parser import text_string_to_metric_families

from swarmd.testing.daemon import LocalDaemon


def events(daemon: LocalDaemon, name: str) -> list[dict[str, Any]]:
    """The JSON log lines of ``daemon`` (supervisor and workers) whose event is ``name``."""
    found = []
    for line in daemon.log().splitlines():
        with contextlib.suppress(msgspec.DecodeError):
            record = msgspec.json.decode(line)
            if isinstance(record, dict) and record.get("event") == name:
                found.append(record)
    return found


def worker_pids(daemon: LocalDaemon) -> dict[int, int]:
    """Worker index -> the pid of the process last started in that slot."""
    return {int(e["worker"]): int(e["pid"]) for e in events(daemon, "worker_started")}


def alive(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def by_worker(daemon: LocalDaemon, sample: str, **labels: str) -> dict[str, float]:
    """The values of ``sample`` on the daemon's /metrics summed per ``worker`` label, over the
    series that carry ``labels``."""
    status, text = daemon.get("/metrics")
    assert status == 200, status
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                worker = s.labels.get("worker", "")
                totals[worker] = totals.get(worker, 0.0) + s.value
    return totals
