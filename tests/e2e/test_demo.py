"""`swarmd demo`, the README's first command: a swarm of 50 agents through a real daemon, and its report."""

from __future__ import annotations

import tempfile

import pytest
from support.harness import swarmd

pytestmark = pytest.mark.slow


def test_demo_runs_a_swarm_and_reports() -> None:
    # Not tmp_path: under pytest-xdist (.../pytest-NNN/popen-gwN/test_.../) the demo's own
    # swarmd-demo-XXXXXXXX/state/api.sock would pass the 107 bytes a unix socket's path may have.
    with tempfile.TemporaryDirectory(prefix="sd-", dir="/tmp") as tmp:
        result = swarmd("demo", env={"TMPDIR": tmp}, timeout=120)
    out = result.stdout
    assert "50 agents" in out and "concurrent peak: 50" in out
    assert "identity violations: 0" in out and "ledger verified: ok" in out
