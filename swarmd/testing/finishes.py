"""Finishing reserved jobs without running them: what a worker would commit had each succeeded.

For the bench and the tests that fill a backend's ledger in process (`swarmd.bench.retention_cost`,
the test suite's ``ledger_fill``), one call per batch instead of a daemon running jobs one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from swarmd.ledger.records import OutcomeRecord
from swarmd.queue.base import Disposition, Finish, Reserved


def succeeded(held: Sequence[Reserved], *, finished_at: float, result: Any = None) -> list[Finish]:
    """A `Finish` for each of ``held``: done, its ledger record saying it succeeded at
    ``finished_at`` with ``result``."""
    return [
        Finish(
            job.job_id,
            Disposition.DONE,
            record=OutcomeRecord(
                job_id=job.job_id,
                gid=job.gid,
                agent=job.agent,
                outcome="succeeded",
                attempt=job.attempt,
                finished_at=finished_at,
                result=result,
            ).encode(),
            handle=job.handle,
        )
        for job in held
    ]
