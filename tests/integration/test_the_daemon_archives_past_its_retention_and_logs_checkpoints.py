"""A real daemon with ``ledger_max_entries = 20`` and ``checkpoint_interval = "1s"``: it archives
what it no longer keeps live to ``archive/`` in its state dir, and logs ``ledger_checkpoint``
lines that `swarmd ledger verify --anchor` accepts. Then, daemon stopped, the chain is rewritten
consistently after an edit: plain `verify` passes, `verify --anchor` with an earlier checkpoint
fails and says between which checkpoints the edit lies."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from support.harness import Daemon, submit, swarmd, wait_until

from swarmd.ledger.chain import chain_hash

pytestmark = pytest.mark.slow

JOBS = 60
KEEP = 20


def _checkpoints(daemon: Daemon) -> list[dict[str, Any]]:
    return [json.loads(line) for line in daemon.log().splitlines() if '"ledger_checkpoint"' in line]


def _anchor_index(state: Path) -> int | None:
    with sqlite3.connect(f"file:{state / 'swarmd.db'}?mode=ro", uri=True, timeout=5) as conn:
        row = conn.execute("SELECT value FROM meta WHERE key = 'ledger_anchor'").fetchone()
    return None if row is None else int(str(row[0]).split(":")[0])


def _rewrite_from(state: Path, edited: int) -> None:
    """Edit entry ``edited`` and recompute every hash from it on: a consistent forgery."""
    with sqlite3.connect(state / "swarmd.db") as conn:
        rows = conn.execute("SELECT idx, prev_hash, record FROM ledger WHERE idx >= ? ORDER BY idx", (edited,))
        prev = None
        for idx, stored_prev, stored in rows.fetchall():
            prev = stored_prev if prev is None else prev
            record = stored.replace(b'"succeeded"', b'"cancelled"') if idx == edited else stored
            digest = chain_hash(idx, prev, record)
            conn.execute(
                "UPDATE ledger SET prev_hash = ?, hash = ?, record = ? WHERE idx = ?", (prev, digest, record, idx)
            )
            prev = digest


def test_the_daemon_archives_beyond_its_retention_and_checkpoints_catch_a_rewrite(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {"SWARMD_LOG_FORMAT": "json", "SWARMD_LEDGER_MAX_ENTRIES": str(KEEP), "SWARMD_CHECKPOINT_INTERVAL": "1s"}
    daemon = Daemon(state, env=env).start()
    try:
        first = submit(state, "echo", "GID-a", count=30)
        wait_until(lambda: any(c["index"] == 29 for c in _checkpoints(daemon)), timeout=30, what="a checkpoint at 29")
        ids = first + submit(state, "echo", "GID-a", count=JOBS - 30)
        wait_until(lambda: _anchor_index(state) == JOBS - KEEP - 1, timeout=30, what="the archive past the retention")
        wait_until(
            lambda: any(c["index"] == JOBS - 1 for c in _checkpoints(daemon)), timeout=30, what="the last checkpoint"
        )
    finally:
        daemon.stop()
    archive = state / "archive"
    early = next(c for c in _checkpoints(daemon) if c["index"] == 29)
    late = next(c for c in _checkpoints(daemon) if c["index"] == JOBS - 1)
    assert early["anchor"] == f"29:{early['hash']}"
    assert swarmd("ledger", "checkpoint", "--state-dir", str(state)).stdout.split() == [
        "ledger_checkpoint",
        f"index={JOBS - 1}",
        f"hash={late['hash']}",
    ]
    verified = swarmd("ledger", "verify", "--state-dir", str(state), "--archive", str(archive)).stdout
    assert verified.startswith(f"ledger ok: {JOBS} entries"), verified
    exported = swarmd("ledger", "export", "--state-dir", str(state), "--archive", str(archive)).stdout.splitlines()
    assert sorted(json.loads(line)["job_id"] for line in exported) == sorted(ids)
    anchors = ["--anchor", early["anchor"], "--anchor", late["anchor"]]
    ok = swarmd("ledger", "verify", "--state-dir", str(state), "--archive", str(archive), *anchors)
    assert "anchor 29 holds" in ok.stdout and f"anchor {JOBS - 1} holds" in ok.stdout

    _rewrite_from(state, JOBS - 10)  # a live entry, after the early checkpoint, before the late one
    plain = swarmd("ledger", "verify", "--state-dir", str(state))
    assert plain.stdout.startswith("ledger ok"), plain.stdout
    caught = swarmd("ledger", "verify", "--state-dir", str(state), "--archive", str(archive), *anchors, check=False)
    assert caught.returncode == 1, caught.stdout
    assert "anchor 29 holds" in caught.stdout
    assert f"anchor {JOBS - 1} FAILS" in caught.stdout
    assert f"an entry was changed after index 29 and at or before index {JOBS - 1}" in caught.stdout
