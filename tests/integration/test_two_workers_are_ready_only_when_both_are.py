"""With ``--workers 2`` the supervisor tells systemd READY=1, and answers /readyz 200, only once
both workers are ready: one worker held in its start (its agent module's import waits for a
file) keeps the whole daemon not ready, and /readyz names it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.harness import Daemon, wait_until
from support.notify import notify_socket
from support.supervised import events, worker_pids

pytestmark = pytest.mark.slow


def test_ready_waits_for_the_slower_worker(tmp_path: Path) -> None:
    state, gate = tmp_path / "state", tmp_path / "gate"
    gate.mkdir()
    with notify_socket() as notify:
        env = {"NOTIFY_SOCKET": str(notify.path), "GATE_DIR": str(gate)}
        daemon = Daemon(state, "--agents", "support.gated_agents", "--workers", "2", env=env)
        try:
            daemon.start(wait_ready=False)
            wait_until(lambda: len(events(daemon, "started")) == 1, timeout=30, what="the first worker to start")
            first_pid = int((gate / "first").read_text())
            held = next(index for index, pid in worker_pids(daemon).items() if pid != first_pid)
            # The supervisor has the first worker's ready beat: only the held one is named.
            wait_until(
                lambda: daemon.get("/readyz") == (503, f"worker {held}: starting\n"),
                what="/readyz to name only the worker held in its start",
            )
            assert [line for _, line in notify.lines if line == "READY=1"] == []

            (gate / "open").touch()
            wait_until(lambda: "READY=1" in [line for _, line in notify.lines], what="READY=1")
            assert len(events(daemon, "started")) == 2
            assert daemon.get("/readyz") == (200, "ok\n")
            assert daemon.stop() == 0
        finally:
            daemon.ensure_dead()
