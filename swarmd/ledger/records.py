"""The ledger record of a job's final outcome, as every backend writes it, and as export prints it."""

from __future__ import annotations

from typing import Any

import msgspec

from swarmd.ledger.chain import CANONICAL_ENCODER, StoredEntry


class OutcomeRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename={"gid": "agent_gid"}):
    """The ledger record of a job's final outcome, as every backend writes it.

    Built once per outcome; `encode` gives its canonical bytes (sorted keys, compact JSON),
    which the chain hashes. Fields left None are not written at all, so a record's bytes are
    exactly those earlier versions wrote for the same outcome.
    """

    job_id: str
    #: The identity the job spoke for (written as ``agent_gid``).
    gid: str
    agent: str
    #: A final outcome: succeeded, dead_lettered or cancelled.
    outcome: str
    attempt: int
    #: Unix time the outcome was reached.
    finished_at: float
    swarm_id: str | None = None
    #: Why the job failed or was cancelled: type, message and, for failures, attempt,
    #: permanent and at.
    error: dict[str, Any] | None = None
    identity_violation: str | None = None
    #: What the handler returned (JSON data), unless too large to keep.
    result: Any = None
    #: Seconds the handler ran; reserved_at and started_at are Unix times.
    duration_s: float | None = None
    reserved_at: float | None = None
    started_at: float | None = None
    #: Who submitted the job through the API socket (SO_PEERCRED; absent for a direct submit).
    submitted_by: str | None = None
    #: Unix time the job was submitted (its queue wait is ``started_at - enqueued_at``).
    enqueued_at: float | None = None
    #: The job whose handler submitted this one (``ctx.submit``).
    parent_id: str | None = None
    #: The jobs this job's handler submitted, written in the same commit as this record.
    children: list[str] | None = None
    #: The swarm this job was the follow-up of.
    follows: str | None = None

    def encode(self) -> bytes:
        """The canonical bytes of this record: what the ledger stores and hashes."""
        return CANONICAL_ENCODER.encode(self)


def export_row(entry: StoredEntry) -> dict[str, Any]:
    """One entry as `swarmd ledger export` prints it: the record flattened, plus the chain."""
    record = entry.decoded()
    row: dict[str, Any] = {"index": entry.index, "job_id": entry.job_id, "gid": record.get("agent_gid")}
    row.update((key, value) for key, value in record.items() if key != "agent_gid")
    row["prev_hash"] = entry.prev_hash
    row["hash"] = entry.hash
    return row
