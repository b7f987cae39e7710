"""`swarmd demo`, the README's first command: a swarm of 50 agents through a real daemon, and its report."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.harness import swarmd

pytestmark = pytest.mark.slow


def test_demo_runs_a_swarm_and_reports(tmp_path: Path) -> None:
    result = swarmd("demo", env={"TMPDIR": str(tmp_path)}, timeout=120)
    out = result.stdout
    assert "50 agents" in out and "concurrent peak: 50" in out
    assert "identity violations: 0" in out and "ledger verified: ok" in out
