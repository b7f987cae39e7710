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

from swarmd.errors import ArchiveError, LedgerEntryError
from swarmd.identity import MAPPING_TYPES
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
class Anchor:
    """A point the chain passes through: the index of an entry and its hash.

    The live store's anchor is the last entry archived (or dropped): the live chain starts
    right after it. A checkpoint the daemon logs is an anchor too, kept outside the state dir.
    """

    index: int
    hash: str

    def __str__(self) -> str:
        return f"{self.index}:{self.hash}"

    @classmethod
    def parse(cls, text: str) -> Anchor:
        """``N:H`` (as `str` writes it and ``ledger_checkpoint`` logs it); `ArchiveError` if not."""
        index, sep, digest = text.strip().partition(":")
        if not sep or not index.isdigit() or len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise ArchiveError(f"anchor {text!r}", "expected INDEX:HASH (a ledger index and a 64-digit hex hash)")
        return cls(int(index), digest)


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What `verify` found: ``ok`` and, if not, the first problem and where."""

    ok: bool
    entries: int
    last_index: int | None
    last_hash: str
    problem: str | None = None
    problem_index: int | None = None
    #: Where the walk started: after this anchor (None: at the genesis, index 0).
    start: Anchor | None = None

    def summary(self) -> str:
        since = "" if self.start is None else f", from anchor {self.start.index}"
        if self.ok and self.last_index is None:
            return "ledger ok: empty"
        if self.ok and self.entries == 0 and self.start is not None:
            return f"ledger ok: 0 live entries, everything up to anchor {self.start.index} archived"
        if self.ok:
            head = self.last_hash[:16]
            entries = f"{self.entries} {'entry' if self.entries == 1 else 'entries'}"
            return f"ledger ok: {entries}{since}, last index {self.last_index}, head {head}"
        return f"ledger BROKEN at index {self.problem_index}: {self.problem}"


def canonical_record(entry: Mapping[str, Any]) -> bytes:
    """Check an entry and encode it canonically (sorted keys, compact JSON).

    Refuses, writing nothing, an entry without a non-empty string ``agent_gid`` or one that
    is not JSON data.
    """
    if not isinstance(entry, MAPPING_TYPES):
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


def verify(entries: Iterable[StoredEntry], start: Anchor | None = None) -> VerifyReport:
    """Walk stored entries in index order; report the first gap, duplicate or alteration.

    With ``start`` (the live store's anchor), the first entry must be ``start.index + 1``,
    chained to ``start.hash``: the entries before it were archived. ``entries`` counts the
    entries walked.

    An entry altered and re-hashed is consistent with itself; what gives it away is the next
    entry, which was chained to its old hash. When that next entry is consistent with itself
    it is intact, and the blame goes to the entry before it, the one rewritten.
    """
    first = 0 if start is None else start.index + 1
    expected = first
    prev = before_prev = GENESIS_HASH if start is None else start.hash
    seen_jobs: set[str] = set()
    for entry in entries:
        problem = _problem(entry, expected, prev, seen_jobs)
        if problem is not None:
            if expected > first and entry.index == expected and _rechained(entry, prev):
                rewritten = expected - 1
                last = rewritten - 1 if rewritten else None
                problem = (
                    f"entry {rewritten} was rewritten: entry {expected} is intact and chained to another "
                    "hash (the record was altered and its hash recomputed)"
                )
                return VerifyReport(False, rewritten - first, last, before_prev, problem, rewritten, start)
            last = expected - 1 if expected else None
            return VerifyReport(False, expected - first, last, prev, problem, entry.index, start)
        if entry.job_id is not None:
            seen_jobs.add(entry.job_id)
        before_prev, prev = prev, entry.hash
        expected += 1
    return VerifyReport(True, expected - first, expected - 1 if expected else None, prev, start=start)


@dataclass(frozen=True, slots=True)
class AnchorFinding:
    """Whether the chain still passes through one anchor: ``holds`` True or False, or None when
    its entry was not walked (archived, and no archive given; or past the end)."""

    anchor: Anchor
    holds: bool | None
    #: The hash the chain has at the anchor's index (None: not walked).
    found: str | None = None

    def summary(self) -> str:
        if self.holds:
            return f"anchor {self.anchor.index} holds"
        if self.holds is None:
            return f"anchor {self.anchor.index} NOT CHECKED: entry {self.anchor.index} is not in what was walked"
        return f"anchor {self.anchor.index} FAILS: entry {self.anchor.index} now has hash {self.found}"


def check_anchors(
    entries: Iterable[StoredEntry], anchors: Iterable[Anchor], start: Anchor | None = None
) -> tuple[VerifyReport, list[AnchorFinding]]:
    """`verify` the chain and tell, for each anchor (in index order), whether the chain passes
    through it. A chain rewritten consistently after an edit passes `verify`, but no longer
    through an anchor (a checkpoint) taken after the edited entry and kept elsewhere."""
    wanted = sorted(set(anchors), key=lambda anchor: anchor.index)
    indices = {anchor.index for anchor in wanted}
    seen: dict[int, str] = {}
    if start is not None and start.index in indices:
        seen[start.index] = start.hash

    def tapped() -> Iterable[StoredEntry]:
        for entry in entries:
            if entry.index in indices:
                seen[entry.index] = entry.hash
            yield entry

    report = verify(tapped(), start)
    findings: list[AnchorFinding] = []
    for anchor in wanted:
        found = seen.get(anchor.index)
        findings.append(AnchorFinding(anchor, None if found is None else found == anchor.hash, found))
    return report, findings


def tampering_between(findings: Iterable[AnchorFinding]) -> str | None:
    """Where the first failing anchor puts an edit: after the last anchor before it that holds."""
    last_good: int | None = None
    for finding in findings:
        if finding.holds:
            last_good = finding.anchor.index
        elif finding.holds is False:
            after = "the start of the chain" if last_good is None else f"index {last_good}"
            return f"an entry was changed after {after} and at or before index {finding.anchor.index}"
    return None


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
