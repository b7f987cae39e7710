"""`verify` on a tampered ledger: it names the entry that was changed, and a record whose
column type was changed (BLOB to TEXT) is judged, not a crash."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec

from swarmd.ledger.chain import GENESIS_HASH, StoredEntry, chain_hash, verify
from swarmd.ledger.durable import DurableLedger


def _chain(n: int) -> list[StoredEntry]:
    entries, prev = [], GENESIS_HASH
    for index in range(n):
        record = msgspec.json.encode({"agent_gid": "G", "job_id": f"J{index}", "n": index})
        digest = chain_hash(index, prev, record)
        entries.append(StoredEntry(index, f"J{index}", prev, digest, record))
        prev = digest
    return entries


def test_an_entry_altered_and_rehashed_is_named_itself_not_the_next_one() -> None:
    entries = _chain(6)
    forged = msgspec.json.encode({"agent_gid": "G", "job_id": "J3", "n": 333})
    entries[3] = StoredEntry(3, "J3", entries[3].prev_hash, chain_hash(3, entries[3].prev_hash, forged), forged)
    report = verify(entries)
    assert not report.ok
    assert report.problem_index == 3
    assert "entry 3 was rewritten" in (report.problem or "")
    assert report.entries == 3 and report.last_index == 2 and report.last_hash == entries[2].hash


def test_an_entry_altered_without_rehashing_is_named_itself() -> None:
    entries = _chain(4)
    old = entries[2]
    entries[2] = StoredEntry(2, "J2", old.prev_hash, old.hash, old.record.replace(b'"n":2', b'"n":7'))
    report = verify(entries)
    assert not report.ok and report.problem_index == 2 and "altered" in (report.problem or "")


def test_a_broken_link_in_the_next_entry_is_named_there() -> None:
    entries = _chain(4)
    old = entries[2]
    entries[2] = StoredEntry(2, "J2", "f" * 64, old.hash, old.record)  # its prev_hash edited, hash not
    report = verify(entries)
    assert not report.ok and report.problem_index == 2 and "prev_hash" in (report.problem or "")


async def test_a_record_stored_as_text_is_verified_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = DurableLedger(path)
    for index in range(3):
        await ledger.append({"agent_gid": "G", "job_id": f"J{index}"})
    await ledger.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE ledger SET record = CAST(record AS TEXT) WHERE idx = 1")
        assert conn.execute("SELECT typeof(record) FROM ledger WHERE idx = 1").fetchone()[0] == "text"
    ledger = DurableLedger(path)
    try:
        assert (await ledger.verify()).ok  # the same bytes, as text: the chain still holds
        with sqlite3.connect(path) as conn:
            conn.execute("""UPDATE ledger SET record = '{"agent_gid":"X","job_id":"J1"}' WHERE idx = 1""")
        report = await ledger.verify()
    finally:
        await ledger.close()
    assert not report.ok and report.problem_index == 1
