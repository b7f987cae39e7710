"""Crash records (swarmd.runtime.crashes): kept in a private file, bounded, cleared job by job,
and never a reason not to start."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from swarmd.errors import StateDirError
from swarmd.runtime.crashes import CRASHES_NAME, MAX_RECORDS, CrashRecords


class Evil(Exception):
    def __str__(self) -> str:
        raise Evil()


def test_records_count_each_job_and_clear_it(tmp_path: Path) -> None:
    records = CrashRecords(tmp_path)
    assert records.counts() == {}
    records.record(["a", "b"], RuntimeError("one"))
    records.record(["a"], Evil())  # an error that cannot be formatted is still recorded
    assert records.counts() == {"a": 2, "b": 1}
    assert stat.S_IMODE((tmp_path / CRASHES_NAME).stat().st_mode) == 0o600
    assert [record.error for record in records.load()] == ["RuntimeError: one", "Evil: <Evil: str() failed>"]
    records.clear("b")
    assert records.counts() == {"a": 2}
    records.clear("a")
    assert records.counts() == {} and records.load() == []


def test_only_the_last_records_are_kept(tmp_path: Path) -> None:
    records = CrashRecords(tmp_path)
    for n in range(MAX_RECORDS + 5):
        records.record([f"job-{n}"], RuntimeError(str(n)))
    counts = records.counts()
    assert len(counts) == MAX_RECORDS and "job-0" not in counts and f"job-{MAX_RECORDS + 4}" in counts


def test_a_damaged_file_counts_for_nothing(tmp_path: Path) -> None:
    (tmp_path / CRASHES_NAME).write_bytes(b"{not json")
    records = CrashRecords(tmp_path)
    assert records.counts() == {}
    records.record(["a"], RuntimeError("x"))  # and is replaced by the next crash
    assert records.counts() == {"a": 1}


def test_a_symlink_is_never_written_through(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    (tmp_path / f"{CRASHES_NAME}.tmp").symlink_to(target)
    with pytest.raises(StateDirError):
        CrashRecords(tmp_path).record(["a"], RuntimeError("x"))
    assert target.read_text() == "keep"
    assert not os.path.exists(tmp_path / CRASHES_NAME)
