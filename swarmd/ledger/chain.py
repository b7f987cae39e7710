"""The ledger chain: append-only, gap-free and hash-chained, so that `verify` proves it untouched.

Every entry gets the next index (0, 1, 2, ... with no gaps) and the hash of the entry before
it. An entry's hash covers its index, the previous hash and the exact stored bytes of its
record, so `verify` finds any gap, duplicate, reordering or altered byte.

Records are JSON objects that name the identity they speak for in ``agent_gid``. Entries the
daemon writes also carry ``job_id`` and the ledger holds at most one entry per job id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

import msgspec

from swarmd.errors import LedgerEntryError
from swarmd.model import plain_strings

GENESIS_HASH: Final = "0" * 64
#: Encodes a record with sorted keys: the canonical bytes the chain hashes.
CANONICAL_ENCODER: Final = msgspec.json.Encoder(order="sorted", enc_hook=plain_strings)


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """One entry as stored: what `verify` checks."""

    index: int
    job_id: str | None
    prev_hash: str
    hash: str
    record: bytes

    def decoded(self) -> dict[str, Any]:
        value = msgspec.json.decode(self.record)
        if not isinstance(value, dict):
            raise ValueError("record is not a JSON object")
        return value


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What `verify` found: ``ok`` and, if not, the first problem and where."""

    ok: bool
    entries: int
    last_index: int | None
    last_hash: str
    problem: str | None = None
    problem_index: int | None = None

    def summary(self) -> str:
        if self.ok and self.last_index is None:
            return "ledger ok: empty"
        if self.ok:
            head = self.last_hash[:16]
            entries = f"{self.entries} {'entry' if self.entries == 1 else 'entries'}"
            return f"ledger ok: {entries}, last index {self.last_index}, head {head}"
        return f"ledger BROKEN at index {self.problem_index}: {self.problem}"


def canonical_record(entry: Mapping[str, Any]) -> bytes:
    """Check an entry and encode it canonically (sorted keys, compact JSON).

    Refuses, writing nothing, an entry without a non-empty string ``agent_gid`` or one that
    is not JSON data.
    """
    if not isinstance(entry, Mapping):
        raise LedgerEntryError("$", f"entry must be a mapping, not {type(entry).__name__}")
    gid = entry.get("agent_gid")
    if not isinstance(gid, str) or not gid:
        raise LedgerEntryError("agent_gid", "required: a non-empty string naming the agent's GID")
    job_id = entry.get("job_id")
    if job_id is not None and not isinstance(job_id, str):
        raise LedgerEntryError("job_id", "must be a string")
    try:
        return CANONICAL_ENCODER.encode(entry)
    except (TypeError, msgspec.EncodeError) as exc:
        raise LedgerEntryError("$", f"not JSON-encodable: {exc}") from None


def chain_hash(index: int, prev_hash: str, record: bytes) -> str:
    """The hash of an entry: SHA-256 over its index, the previous hash and its record bytes."""
    digest = hashlib.sha256(f"{index}:{prev_hash}:".encode())
    digest.update(record)
    return digest.hexdigest()


def _problem(entry: StoredEntry, expected: int, prev: str, seen_jobs: set[str]) -> str | None:
    """What is wrong with ``entry`` if it should be entry ``expected`` following ``prev``."""
    if entry.index != expected:
        kind = "duplicate" if entry.index < expected else "gap"
        return f"{kind}: expected index {expected}, found {entry.index}"
    if entry.prev_hash != prev:
        return "prev_hash does not match the previous entry's hash"
    if chain_hash(entry.index, entry.prev_hash, entry.record) != entry.hash:
        return "hash does not match the entry's contents (altered)"
    try:
        record = entry.decoded()
    except (msgspec.DecodeError, ValueError) as exc:
        return f"record is not a JSON object: {exc}"
    if record.get("job_id") != entry.job_id:
        return "job_id column does not match the record"
    if entry.job_id is not None and entry.job_id in seen_jobs:
        return f"duplicate entry for job {entry.job_id}"
    return None


def verify(entries: Iterable[StoredEntry]) -> VerifyReport:
    """Walk stored entries in index order; report the first gap, duplicate or alteration.

    An entry altered and re-hashed is consistent with itself; what gives it away is the next
    entry, which was chained to its old hash. When that next entry is consistent with itself
    it is intact, and the blame goes to the entry before it, the one rewritten.
    """
    expected = 0
    prev = before_prev = GENESIS_HASH
    seen_jobs: set[str] = set()
    for entry in entries:
        problem = _problem(entry, expected, prev, seen_jobs)
        if problem is not None:
            if expected and entry.index == expected and _rechained(entry, prev):
                rewritten = expected - 1
                last = rewritten - 1 if rewritten else None
                problem = (
                    f"entry {rewritten} was rewritten: entry {expected} is intact and chained to another "
                    "hash (the record was altered and its hash recomputed)"
                )
                return VerifyReport(False, rewritten, last, before_prev, problem, rewritten)
            last = expected - 1 if expected else None
            return VerifyReport(False, expected, last, prev, problem, entry.index)
        if entry.job_id is not None:
            seen_jobs.add(entry.job_id)
        before_prev, prev = prev, entry.hash
        expected += 1
    return VerifyReport(True, expected, expected - 1 if expected else None, prev)


def _rechained(entry: StoredEntry, prev: str) -> bool:
    """``entry`` is consistent with itself, but chained to a hash other than ``prev``."""
    if entry.prev_hash == prev or not entry.prev_hash.isascii():  # not a hash swarmd could have written
        return False
    return chain_hash(entry.index, entry.prev_hash, entry.record) == entry.hash


class Ledger(Protocol):
    """What the dispatcher needs of a ledger. (A ledger may also offer ``append_soon(entry)``,
    returning a future of the index, which the dispatcher then uses instead of awaiting each
    append in its task.)"""

    async def append(self, entry: Mapping[str, Any]) -> int:
        """Append one entry; return its index once it is committed."""
        ...

    async def verify(self) -> VerifyReport: ...

    async def close(self) -> None: ...
