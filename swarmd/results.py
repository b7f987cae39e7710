"""A finished job's result as a producer receives it: `JobResult`, read from its ledger entry."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec


class JobResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a finished job came to, as `AsyncClient.wait` returns it (from its ledger entry)."""

    job_id: str
    #: succeeded, dead_lettered or cancelled.
    outcome: str
    #: What the handler returned (JSON data), for a job that succeeded.
    result: Any = None
    #: Why it failed or was cancelled: type, message and, for a failure, traceback (and
    #: attempt, permanent, at).
    error: dict[str, Any] | None = None
    #: Attempts spent, the last one included.
    attempts: int = 0
    ledger_index: int = -1
    #: Seconds from the job's submit (or its not_before) to its handler's start; None: not recorded.
    queue_wait_s: float | None = None
    #: Seconds the handler ran; None: it never ran.
    run_s: float | None = None
    #: Why the result broke the job's identity (IV-01); None: it did not.
    identity_violation: str | None = None
    #: The swarm the job belongs to, if any.
    swarm_id: str | None = None
    #: Unix time the outcome was reached.
    finished_at: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether the job succeeded."""
        return self.outcome == "succeeded"

    @classmethod
    def from_record(cls, job_id: str, ledger_index: int, record: Mapping[str, Any]) -> JobResult:
        """The result a ledger record (decoded) tells of."""
        error = record.get("error")
        started, enqueued = record.get("started_at"), record.get("enqueued_at")
        return cls(
            job_id=job_id,
            outcome=str(record.get("outcome", "")),
            result=record.get("result"),
            error=error if isinstance(error, dict) else ({"message": str(error)} if error else None),
            attempts=int(record.get("attempt", 0)),
            ledger_index=ledger_index,
            queue_wait_s=max(0.0, started - enqueued) if started is not None and enqueued is not None else None,
            run_s=record.get("duration_s"),
            identity_violation=record.get("identity_violation"),
            swarm_id=record.get("swarm_id"),
            finished_at=float(record.get("finished_at", 0.0)),
        )

    def as_dict(self) -> dict[str, Any]:
        """This result as JSON-ready data (what ``swarmd result --json`` prints)."""
        return {name: getattr(self, name) for name in self.__struct_fields__}
