"""`swarmd submit --count N` is one transaction: a count whose jobs add up to more than the batch
limit (`swarmd.model.MAX_BATCH_BYTES`) is refused whole, with a clear error and exit 2, never split
into several submits, and nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.harness import ledger_count, queue_states, swarmd

from swarmd.model import MAX_BATCH_BYTES

pytestmark = pytest.mark.slow


def test_a_count_over_the_batch_limit_is_refused_whole(tmp_path: Path) -> None:
    state = tmp_path / "state"
    payload = '"' + "x" * 2000 + '"'
    count = MAX_BATCH_BYTES // 2000 + 1000  # over the limit on the payloads alone
    args = ["submit", "--state-dir", str(state), "--agent", "echo", "--gid", "G-1", "--payload", payload]
    result = swarmd(*args, "--count", str(count), check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert f"a submit of {count} jobs is over the limit of {MAX_BATCH_BYTES} bytes in all" in result.stderr
    assert "submit fewer or smaller jobs at a time" in result.stderr
    assert queue_states(state) == {} and ledger_count(state) == 0
    assert len(swarmd(*args, "--count", "100").stdout.splitlines()) == 100  # under it: one submit, all kept
    assert queue_states(state) == {"ready": 100}
