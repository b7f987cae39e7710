"""The ledger record of a job's final outcome, as every backend writes it, and as export prints it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from swarmd.ledger.chain import CANONICAL_ENCODER, StoredEntry


def job_record(
    *,
    job_id: str,
    gid: str,
    agent: str,
    outcome: str,
    attempt: int,
    finished_at: float,
    swarm_id: str | None = None,
    error: Mapping[str, Any] | None = None,
    identity_violation: str | None = None,
    result: Any = None,
    duration_s: float | None = None,
    reserved_at: float | None = None,
    started_at: float | None = None,
) -> bytes:
    """The canonical ledger record of a job's final outcome (what every backend writes)."""
    entry: dict[str, Any] = {
        "agent_gid": gid,
        "job_id": job_id,
        "agent": agent,
        "outcome": outcome,
        "attempt": attempt,
        "finished_at": finished_at,
    }
    if swarm_id is not None:
        entry["swarm_id"] = swarm_id
    if error is not None:
        entry["error"] = dict(error)
    if identity_violation is not None:
        entry["identity_violation"] = identity_violation
    if result is not None:
        entry["result"] = result
    if duration_s is not None:
        entry["duration_s"] = duration_s
    if reserved_at is not None:
        entry["reserved_at"] = reserved_at
    if started_at is not None:
        entry["started_at"] = started_at
    return CANONICAL_ENCODER.encode(entry)


def export_row(entry: StoredEntry) -> dict[str, Any]:
    """One entry as `swarmd ledger export` prints it: the record flattened, plus the chain."""
    record = entry.decoded()
    row: dict[str, Any] = {"index": entry.index, "job_id": entry.job_id, "gid": record.get("agent_gid")}
    row.update((key, value) for key, value in record.items() if key != "agent_gid")
    row["prev_hash"] = entry.prev_hash
    row["hash"] = entry.hash
    return row
