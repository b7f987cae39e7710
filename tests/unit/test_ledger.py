"""The hash-chained ledger: gap-free indices, one entry per job, tamper evidence."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swarmd import DurableLedger, LedgerEntryError, SharedLedger
from swarmd.ledger.chain import StoredEntry, verify


async def test_memory_ledger_is_one_entry_per_job_id() -> None:
    ledger = SharedLedger()
    first = await ledger.append({"agent_gid": "G", "job_id": "j1", "outcome": "succeeded"})
    again = await ledger.append({"agent_gid": "G", "job_id": "j1", "outcome": "succeeded"})
    other = await ledger.append({"agent_gid": "G", "job_id": "j2"})
    assert (first, again, other) == (0, 0, 1)
    assert len(ledger) == 2


async def test_durable_ledger_is_one_entry_per_job_id_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    ledger = DurableLedger(path)
    assert await ledger.append({"agent_gid": "G", "job_id": "j1"}) == 0
    await ledger.close()
    ledger = DurableLedger(path)
    assert await ledger.append({"agent_gid": "G", "job_id": "j1"}) == 0
    assert await ledger.append({"agent_gid": "G", "job_id": "j2"}) == 1
    assert (await ledger.verify()).entries == 2
    await ledger.close()


async def test_durable_ledger_refuses_bad_entries_and_writes_nothing(tmp_path: Path) -> None:
    ledger = DurableLedger(tmp_path / "l.db")
    with pytest.raises(LedgerEntryError, match="agent_gid"):
        await ledger.append({"job_id": "x"})
    with pytest.raises(LedgerEntryError, match="not JSON-encodable"):
        await ledger.append({"agent_gid": "G", "value": object()})
    assert (await ledger.verify()).entries == 0
    await ledger.close()


async def test_durable_appends_group_into_few_commits(tmp_path: Path) -> None:
    ledger = DurableLedger(tmp_path / "l.db")
    commits = 0
    original = ledger._write

    def counting(records: list[tuple[str | None, bytes]]) -> list[int]:
        nonlocal commits
        commits += 1
        return original(records)

    ledger._write = counting  # type: ignore[method-assign]
    indices = await asyncio.gather(*(ledger.append({"agent_gid": f"G{i}"}) for i in range(200)))
    assert sorted(indices) == list(range(200))
    assert commits <= 2  # the first append's commit, then everything gathered meanwhile
    await ledger.close()


def test_verify_finds_gap_duplicate_and_reorder() -> None:
    async def build() -> list[StoredEntry]:
        ledger = SharedLedger()
        for i in range(5):
            await ledger.append({"agent_gid": "G", "job_id": f"j{i}"})
        return ledger.entries()

    entries = asyncio.run(build())
    assert verify(entries).ok
    gap = verify(entries[:2] + entries[3:])
    assert not gap.ok and gap.problem_index == 3 and "gap" in (gap.problem or "")
    dup = verify(entries[:3] + entries[2:])
    assert not dup.ok and "duplicate" in (dup.problem or "")
    swapped = verify([entries[0], entries[2], entries[1]])
    assert not swapped.ok


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    writers=st.integers(min_value=1, max_value=8),
    per_writer=st.integers(min_value=0, max_value=12),
    yields=st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=16),
)
def test_any_interleaving_of_concurrent_appends_is_gap_free_and_verifies(
    writers: int, per_writer: int, yields: list[int]
) -> None:
    async def run() -> tuple[list[int], bool, bool]:
        memory = SharedLedger()

        async def writer(w: int, ledger: SharedLedger) -> list[int]:
            out = []
            for n in range(per_writer):
                for _ in range(yields[(w + n) % len(yields)]):
                    await asyncio.sleep(0)  # a different interleaving per example
                out.append(await ledger.append({"agent_gid": f"G{w}", "n": n, "job_id": f"{w}-{n}"}))
            return out

        results = await asyncio.gather(*(writer(w, memory) for w in range(writers)))
        return (
            sorted(i for r in results for i in r),
            (await memory.verify()).ok,
            len(memory) == writers * per_writer,
        )

    indices, ok, count_ok = asyncio.run(run())
    assert indices == list(range(writers * per_writer))
    assert ok and count_ok


_DURABLE_WRITES = 12


@pytest.fixture(scope="module")
def stored_ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A durable ledger written by concurrent writers, reused by the tamper property."""
    path = tmp_path_factory.mktemp("ledger") / "l.db"

    async def fill() -> None:
        ledger = DurableLedger(path)
        await asyncio.gather(
            *(ledger.append({"agent_gid": f"G{i % 3}", "job_id": f"job-{i}", "v": i}) for i in range(_DURABLE_WRITES))
        )
        assert (await ledger.verify()).ok
        await ledger.close()

    asyncio.run(fill())
    return path


_COLUMNS = ["idx", "job_id", "prev_hash", "hash", "record"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_single_altered_byte_in_a_stored_entry_is_found(stored_ledger: Path, data: st.DataObject) -> None:
    conn = sqlite3.connect(stored_ledger)
    rows = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM ledger ORDER BY idx").fetchall()
    conn.close()
    entries = [StoredEntry(r[0], r[1], r[2], r[3], bytes(r[4])) for r in rows]
    assert verify(entries).ok
    which = data.draw(st.integers(0, len(entries) - 1), label="entry")
    column = data.draw(st.sampled_from(_COLUMNS), label="column")
    original = entries[which]
    stored = getattr(original, "index" if column == "idx" else column)
    as_bytes = str(stored).encode() if not isinstance(stored, bytes) else stored
    position = data.draw(st.integers(0, len(as_bytes) - 1), label="byte")
    new_byte = data.draw(st.integers(0, 255).filter(lambda b: b != as_bytes[position]), label="value")
    altered = as_bytes[:position] + bytes([new_byte]) + as_bytes[position + 1 :]
    if column == "idx":
        try:
            new_index = int(altered.decode())
        except (UnicodeDecodeError, ValueError):
            return  # SQLite's INTEGER PRIMARY KEY cannot hold a non-integer: nothing to store
        if new_index == original.index:
            return  # e.g. "7" -> " 7": the same stored integer, not an alteration
        changed = StoredEntry(new_index, original.job_id, original.prev_hash, original.hash, original.record)
    elif column == "record":
        changed = StoredEntry(original.index, original.job_id, original.prev_hash, original.hash, altered)
    else:
        text = altered.decode("utf-8", errors="surrogateescape")
        kwargs = {
            "index": original.index,
            "job_id": original.job_id,
            "prev_hash": original.prev_hash,
            "hash": original.hash,
            "record": original.record,
        }
        kwargs[column] = text
        changed = StoredEntry(**kwargs)  # type: ignore[arg-type]
    tampered = [*entries[:which], changed, *entries[which + 1 :]]
    if column == "idx":
        tampered.sort(key=lambda e: e.index)  # the store returns entries in index order
    report = verify(tampered)
    assert not report.ok, f"altered {column} of entry {which} at byte {position} went unnoticed"
