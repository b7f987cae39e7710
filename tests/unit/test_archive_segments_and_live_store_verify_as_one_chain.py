"""Archive segments (swarmd.ledger.archive) and anchors (swarmd.ledger.chain), as pure file work.

A chain cut into segments plus a live tail verifies as one chain from index 0; a missing,
altered or unreadable segment is named; what lies past the anchor (an archive that crashed
before its commit) is ignored, then removed; anchors tell a chain rewritten consistently.
"""

from __future__ import annotations

import gzip
from dataclasses import replace
from pathlib import Path

import pytest

from swarmd.errors import ArchiveError
from swarmd.ledger.archive import (
    archived_entries,
    read_segment,
    remove_uncommitted,
    segments,
    verify_with_archive,
    write_segment,
)
from swarmd.ledger.chain import Anchor, StoredEntry, chain_hash, check_anchors, tampering_between, verify
from swarmd.ledger.memory import SharedLedger


def _chain(n: int) -> list[StoredEntry]:
    ledger = SharedLedger()
    for i in range(n):
        ledger._append({"agent_gid": "GID-a", "job_id": f"job-{i}", "n": i, "text": "é ✓"})
    return ledger.entries()


def _anchor(entry: StoredEntry) -> Anchor:
    return Anchor(entry.index, entry.hash)


def test_segments_and_live_tail_verify_as_one_chain_and_read_back_byte_for_byte(tmp_path: Path) -> None:
    entries = _chain(25)
    write_segment(tmp_path, entries[0:10])
    write_segment(tmp_path, entries[10:20])
    assert [(s.first, s.last) for s in segments(tmp_path)] == [(0, 9), (10, 19)]
    assert list(read_segment(segments(tmp_path)[1].path)) == entries[10:20]
    report = verify_with_archive(tmp_path, _anchor(entries[19]), entries[20:])
    assert report.ok, report.summary()
    assert (report.entries, report.last_index) == (25, 24)
    # The live tail alone verifies from the anchor, and not from the genesis.
    assert verify(entries[20:], _anchor(entries[19])).ok
    assert not verify(entries[20:]).ok


def test_a_missing_or_altered_segment_breaks_the_chain_where_it_is(tmp_path: Path) -> None:
    entries = _chain(30)
    for start in (0, 10, 20):
        write_segment(tmp_path, entries[start : start + 10])
    anchor = _anchor(entries[29])
    middle = segments(tmp_path)[1].path
    saved = middle.read_bytes()
    middle.unlink()
    report = verify_with_archive(tmp_path, anchor, [])
    assert not report.ok
    assert report.problem_index == 20 and "gap" in str(report.problem)
    altered = [replace(e, record=e.record.replace(b'"n":15', b'"n":99')) if e.index == 15 else e for e in entries]
    write_segment(tmp_path, altered[10:20])
    report = verify_with_archive(tmp_path, anchor, [])
    assert not report.ok and report.problem_index == 15
    middle.write_bytes(saved[: len(saved) // 2])  # a truncated file is named, not misread
    with pytest.raises(ArchiveError, match=middle.name):
        verify_with_archive(tmp_path, anchor, [])


def test_a_job_id_both_archived_and_live_is_a_duplicate(tmp_path: Path) -> None:
    entries = _chain(10)
    write_segment(tmp_path, entries[:5])
    # A live entry for job-2 again, chained properly after entry 9.
    record = b'{"agent_gid":"GID-a","job_id":"job-2"}'
    again = StoredEntry(10, "job-2", entries[9].hash, chain_hash(10, entries[9].hash, record), record)
    report = verify_with_archive(tmp_path, _anchor(entries[4]), [*entries[5:], again])
    assert not report.ok and report.problem == "duplicate entry for job job-2"


def test_what_lies_past_the_anchor_is_not_read_and_the_next_archive_removes_it(tmp_path: Path) -> None:
    entries = _chain(20)
    write_segment(tmp_path, entries[:10])
    write_segment(tmp_path, entries[10:20])  # written, then a crash before the commit
    (tmp_path / ".ledger-x.123.tmp").write_bytes(b"half")
    anchor = _anchor(entries[9])
    assert [e.index for e in archived_entries(tmp_path, anchor.index)] == list(range(10))
    assert verify_with_archive(tmp_path, anchor, entries[10:]).ok
    removed = remove_uncommitted(tmp_path, anchor)
    assert sorted(path.name for path in removed) == [".ledger-x.123.tmp", "ledger-000000000010-000000000019.jsonl.gz"]
    assert [(s.first, s.last) for s in segments(tmp_path)] == [(0, 9)]


def test_a_segment_is_gzip_json_lines_written_private(tmp_path: Path) -> None:
    path = write_segment(tmp_path, _chain(3))
    assert path.stat().st_mode & 0o077 == 0
    lines = gzip.decompress(path.read_bytes()).splitlines()
    assert len(lines) == 3 and lines[0].startswith(b'{"index":0,"job_id":"job-0"')
    assert not list(tmp_path.glob("*.tmp"))


def test_anchors_catch_a_chain_rewritten_consistently_and_say_where() -> None:
    entries = _chain(40)
    checkpoints = [_anchor(entries[9]), _anchor(entries[19]), _anchor(entries[29])]
    # Entry 15 edited, and every hash from it on recomputed: the chain is consistent again.
    rewritten = list(entries[:15])
    prev = entries[14].hash
    for entry in entries[15:]:
        record = entry.record.replace(b'"n":15', b'"n":0') if entry.index == 15 else entry.record
        digest = chain_hash(entry.index, prev, record)
        rewritten.append(StoredEntry(entry.index, entry.job_id, prev, digest, record))
        prev = digest
    assert verify(rewritten).ok
    report, findings = check_anchors(rewritten, checkpoints)
    assert report.ok
    assert [f.holds for f in findings] == [True, False, False]
    assert tampering_between(findings) == "an entry was changed after index 9 and at or before index 19"
    assert [f.holds for f in check_anchors(entries, checkpoints)[1]] == [True, True, True]
    # An anchor past the end, or before the live start, is not checked (not a pass).
    _, unseen = check_anchors(entries[20:], [_anchor(entries[9]), Anchor(99, "0" * 64)], _anchor(entries[19]))
    assert [f.holds for f in unseen] == [None, None]


@pytest.mark.parametrize("text", ["12", "x:" + "a" * 64, "12:" + "a" * 63, "12:" + "G" * 64, "-1:" + "a" * 64])
def test_an_anchor_that_is_not_index_colon_hash_is_refused_by_name(text: str) -> None:
    with pytest.raises(ArchiveError, match="expected INDEX:HASH"):
        Anchor.parse(text)
