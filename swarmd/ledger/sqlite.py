"""The ledger's table in the SQLite state file: append (chained, one entry per job) and read.

Both the durable ledger and the local queue write here, inside their own transactions, so that
a job's outcome and the removal of its lease commit together.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any, Final

import msgspec

from swarmd.ledger.chain import GENESIS_HASH, StoredEntry, chain_hash

_encode_json: Final = msgspec.json.Encoder().encode


def ledger_tail(conn: sqlite3.Connection) -> tuple[int, str]:
    """(next index, hash of the last entry) — read inside the writing transaction."""
    row = conn.execute("SELECT idx, hash FROM ledger ORDER BY idx DESC LIMIT 1").fetchone()
    if row is None:
        return 0, GENESIS_HASH
    return int(row[0]) + 1, str(row[1])


def append_records(conn: sqlite3.Connection, records: Sequence[tuple[str | None, bytes]]) -> list[int]:
    """Append canonical records inside the caller's write transaction; return their indices.

    A record whose job id is already in the ledger is not written again: its existing index
    is returned instead (one entry per job, however often the job ran).
    """
    existing = existing_indices(conn, [job_id for job_id, _ in records if job_id is not None])
    fresh = [(job_id, record) for job_id, record in records if job_id is None or job_id not in existing]
    written = dict(zip(range(len(fresh)), append_unrecorded(conn, fresh), strict=True))
    indices: list[int] = []
    position = 0
    for job_id, _ in records:
        if job_id is not None and job_id in existing:
            indices.append(existing[job_id])
            continue
        indices.append(written[position])
        if job_id is not None:
            existing[job_id] = written[position]
        position += 1
    return indices


def existing_indices(conn: sqlite3.Connection, job_ids: Sequence[str]) -> dict[str, int]:
    """Ledger index of each of these job ids that is already recorded."""
    if not job_ids:
        return {}
    rows = conn.execute(
        "SELECT job_id, idx FROM ledger WHERE job_id IN (SELECT value FROM json_each(?))",
        (_json_list(job_ids),),
    )
    return {str(job_id): int(idx) for job_id, idx in rows}


def append_unrecorded(conn: sqlite3.Connection, records: Sequence[tuple[str | None, bytes]]) -> list[int]:
    """Chain and insert records the caller KNOWS are not in the ledger yet (and are distinct).

    The UNIQUE constraint on job_id still refuses a duplicate: the transaction then fails
    rather than write a job twice.
    """
    if not records:
        return []
    index, prev = ledger_tail(conn)
    rows: list[tuple[int, str | None, str, str, bytes]] = []
    for job_id, record in records:
        digest = chain_hash(index, prev, record)
        rows.append((index, job_id, prev, digest, record))
        prev = digest
        index += 1
    conn.executemany("INSERT INTO ledger (idx, job_id, prev_hash, hash, record) VALUES (?, ?, ?, ?, ?)", rows)
    return [row[0] for row in rows]


def _json_list(values: Sequence[str]) -> str:
    return _encode_json(list(values)).decode()


def entry_from_row(row: Sequence[Any]) -> StoredEntry:
    """A ledger row (idx, job_id, prev_hash, hash, record) as stored, whatever SQLite typed it:
    a record edited into TEXT is read as its UTF-8 bytes, for `verify` to judge."""
    idx, job_id, prev_hash, digest, record = row
    if isinstance(record, str):
        record = record.encode("utf-8", "surrogateescape")
    elif not isinstance(record, bytes):
        record = str(record).encode()
    return StoredEntry(int(idx), None if job_id is None else str(job_id), str(prev_hash), str(digest), record)


def read_entries(conn: sqlite3.Connection, start: int = 0, batch: int = 5000) -> Iterator[StoredEntry]:
    """Every stored ledger entry from ``start``, in index order, read in batches."""
    while True:
        rows = conn.execute(
            "SELECT idx, job_id, prev_hash, hash, record FROM ledger WHERE idx >= ? ORDER BY idx LIMIT ?",
            (start, batch),
        ).fetchall()
        for row in rows:
            yield entry_from_row(row)
        if len(rows) < batch:
            return
        start = int(rows[-1][0]) + 1
