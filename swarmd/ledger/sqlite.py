"""The ledger's table in the SQLite state file: append (chained, one entry per job) and read.

Both the durable ledger and the local queue write here, inside their own transactions, so that
a job's outcome and the removal of its lease commit together.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

import msgspec

from swarmd.errors import ArchiveError
from swarmd.ledger.chain import GENESIS_HASH, Anchor, StoredEntry, chain_hash
from swarmd.model import job_id_order
from swarmd.storage.horizon import HASHED_IDS_TABLE, first_dead, generation

_encode_json: Final = msgspec.json.Encoder().encode


def ledger_tail(conn: sqlite3.Connection) -> tuple[int, str]:
    """(next index, hash of the last entry) — read inside the writing transaction."""
    row = conn.execute("SELECT idx, hash FROM ledger ORDER BY idx DESC LIMIT 1").fetchone()
    if row is None:  # empty, or everything archived: the chain goes on from the anchor
        anchor = read_anchor(conn)
        return (0, GENESIS_HASH) if anchor is None else (anchor.index + 1, anchor.hash)
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


# -- archiving: the anchor, forgetting archived entries, the index of archived job ids -------
#: The ``meta`` key holding the live store's anchor (``INDEX:HASH`` of the last entry archived).
ANCHOR_KEY: Final = "ledger_anchor"


def read_anchor(conn: sqlite3.Connection) -> Anchor | None:
    """The live store's anchor (None: nothing was ever archived; the chain starts at 0)."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (ANCHOR_KEY,)).fetchone()
    return None if row is None else Anchor.parse(str(row[0]))


#: An archived id's key in ``archived_ids``, after its generation: (where its id sorts among
#: the ids swarmd made, 64 bits of its BLAKE2b hash as a signed integer).
ArchivedIdKey = tuple[int, int]


def archived_id_key(job_id: str) -> ArchivedIdKey:
    """A job id's key in ``archived_ids``: `swarmd.model.job_id_order` (the millisecond
    swarmd made it and 4 bits by which a batch's ids are sorted; 0 for an id a submitter chose)
    and 64 bits of its BLAKE2b hash, as a signed integer.

    The order puts ids in the b-tree about as they were made, so a forgetting step's inserts
    land on a few pages at the end of its generation instead of one page each (the hash alone
    scattered them: about 90 of a generation's pages written by a step of 200 ids); the hash
    tells ids apart: two share a key with odds of about n / 2**64 (n: ids of the same order)."""
    digest = hashlib.blake2b(job_id.encode(), digest_size=8).digest()
    return job_id_order(job_id), int.from_bytes(digest, "big", signed=True)


def _keys_json(keys: Iterable[ArchivedIdKey]) -> str:
    """Keys as a JSON array of ``[made, id_hash]`` pairs, for ``json_each`` to unpack."""
    return _encode_json([list(key) for key in keys]).decode()


def forget_through(
    conn: sqlite3.Connection, through: int, expected: Anchor | None, *, remember_for: float, now: float
) -> Anchor:
    """Inside the caller's write transaction: delete the live entries up to index ``through``,
    remember their job ids in ``archived_ids`` for ``remember_for`` seconds from ``now`` (their
    generation: `swarmd.storage.horizon.generation`) and record the new anchor (``through``
    and its hash). Refuses (`ArchiveError`, nothing written) if the anchor is no longer
    ``expected`` (someone else archived meanwhile) or entry ``through`` is not live."""
    current = read_anchor(conn)
    if current != expected:
        raise ArchiveError("ledger anchor", f"is {current}, not {expected}: another archive ran meanwhile")
    row = conn.execute("SELECT hash FROM ledger WHERE idx = ?", (through,)).fetchone()
    if row is None:
        raise ArchiveError(f"ledger entry {through}", "is not in the live store")
    anchor = Anchor(through, str(row[0]))
    # Set-wise, a few statements whatever the count: row by row (DELETE ... RETURNING, then
    # executemany), each row was a step that let go of the GIL and waited to take it back, which
    # held the backend's thread (and the hot path's commits queued behind it) far longer.
    (ids,) = conn.execute(
        "SELECT json_group_array(job_id) FROM ledger WHERE idx <= ? AND job_id IS NOT NULL", (through,)
    ).fetchone()
    keys = sorted(archived_id_key(str(job_id)) for job_id in msgspec.json.decode(ids))
    conn.execute("DELETE FROM ledger WHERE idx <= ?", (through,))
    conn.execute(
        "INSERT OR IGNORE INTO archived_ids (gen, made, id_hash)"
        " SELECT ?, json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?)",
        (generation(now, remember_for), _keys_json(keys)),
    )
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (ANCHOR_KEY, str(anchor)),
    )
    return anchor


def _live_generations(table: str) -> str:
    """The live generations of ``table`` (those above ``?1``), one primary-key seek each: a
    skip-scan by hand, since a table of ~28 B rows has no room for a second index."""
    return (
        "WITH RECURSIVE g(gen) AS ("
        f" SELECT (SELECT min(gen) FROM {table} WHERE gen > ?1)"
        f" UNION ALL SELECT (SELECT min(gen) FROM {table} WHERE gen > g.gen) FROM g WHERE g.gen IS NOT NULL"
        ") SELECT gen FROM g WHERE gen IS NOT NULL"
    )


_LIVE_GENERATIONS: Final = _live_generations("archived_ids")
_LIVE_HASHED_GENERATIONS: Final = _live_generations(HASHED_IDS_TABLE)


def archived_generations(conn: sqlite3.Connection, now: float) -> list[int]:
    """The generations of ``archived_ids`` still live at Unix time ``now``, oldest first."""
    return [int(gen) for (gen,) in conn.execute(_LIVE_GENERATIONS, (first_dead(now),))]


def archived_ids(conn: sqlite3.Connection, job_ids: Sequence[str], now: float) -> set[str]:
    """Those of ``job_ids`` whose ledger entry was archived (or dropped) and that are still
    remembered at Unix time ``now`` (their generation is live, expired rows or not): one
    primary-key probe per id and live generation (about nine), and as many in the table of ids
    archived under their hash alone (`HASHED_IDS_TABLE`) while it is there."""
    if not job_ids:
        return set()
    keys = {archived_id_key(job_id): job_id for job_id in job_ids}
    rows = conn.execute(
        f"WITH live AS ({_LIVE_GENERATIONS}) SELECT made, id_hash FROM archived_ids "
        "WHERE gen IN (SELECT gen FROM live) AND (made, id_hash) IN "
        "(SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?2))",
        (first_dead(now), _keys_json(keys)),
    )
    found = {keys[(int(made), int(id_hash))] for made, id_hash in rows}
    if _has_hashed_ids(conn):
        hashes = {id_hash: job_id for (_, id_hash), job_id in keys.items()}
        rows = conn.execute(
            f"WITH live AS ({_LIVE_HASHED_GENERATIONS}) SELECT id_key FROM {HASHED_IDS_TABLE} "
            "WHERE gen IN (SELECT gen FROM live) AND id_key IN (SELECT value FROM json_each(?2))",
            (first_dead(now), _encode_json(list(hashes)).decode()),
        )
        found.update(hashes[int(id_key)] for (id_key,) in rows)
    return found


def _has_hashed_ids(conn: sqlite3.Connection) -> bool:
    """Whether ids archived under their hash alone (schema version 6) are still kept."""
    query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    return conn.execute(query, (HASHED_IDS_TABLE,)).fetchone() is not None


def expire_archived_ids(conn: sqlite3.Connection, now: float, limit: int) -> int:
    """Inside the caller's write transaction: delete at most ``limit`` archived ids whose
    generation is no longer live at Unix time ``now``, oldest first (a range of the primary
    key), those archived under their hash alone first, dropping their table once it is empty;
    return how many."""
    forgotten = 0
    if _has_hashed_ids(conn):
        forgotten = conn.execute(
            f"DELETE FROM {HASHED_IDS_TABLE} WHERE (gen, id_key) IN "
            f"(SELECT gen, id_key FROM {HASHED_IDS_TABLE} WHERE gen <= ? ORDER BY gen, id_key LIMIT ?)",
            (first_dead(now), limit),
        ).rowcount
        if conn.execute(f"SELECT 1 FROM {HASHED_IDS_TABLE} LIMIT 1").fetchone() is None:
            conn.execute(f"DROP TABLE {HASHED_IDS_TABLE}")
    if forgotten < limit:
        forgotten += conn.execute(
            "DELETE FROM archived_ids WHERE (gen, made, id_hash) IN (SELECT gen, made, id_hash "
            "FROM archived_ids WHERE gen <= ? ORDER BY gen, made, id_hash LIMIT ?)",
            (first_dead(now), limit - forgotten),
        ).rowcount
    return forgotten
