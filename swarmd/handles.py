"""What `submit` and `submit_many` return: the job ids, with the waits bound to the client.

`JobHandle` is a ``str`` equal to the job id (code that stores, prints or compares ids keeps
working) with ``wait()`` and ``result()``; `Submitted` is a ``list`` of the ids, in the order
given, with the swarm id and ``wait()``, ``results()`` and ``as_completed()``. From an
`AsyncClient` the methods are coroutines (``as_completed`` an async iterator); from a blocking
`Client` they return the values.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class JobHandle(str):
    """A submitted job's id (equal to it, as a ``str``) that can wait for the job's outcome."""

    _client: Any

    def __new__(cls, job_id: str, client: Any = None) -> JobHandle:
        handle = super().__new__(cls, job_id)
        handle._client = client
        return handle

    @property
    def job_id(self) -> str:
        """The id, as a plain ``str``."""
        return str.__str__(self)

    def wait(self, timeout: float | None = None) -> Any:
        """The job's `swarmd.JobResult` once it is recorded (see `AsyncClient.wait`)."""
        return self._bound().wait(self.job_id, timeout)

    def result(self, timeout: float | None = None) -> Any:
        """What the job's handler returned; raises `JobFailed` if it did not succeed."""
        return self._bound().result(self.job_id, timeout)

    def _bound(self) -> Any:
        if self._client is None:
            raise RuntimeError(f"job {self.job_id} was not submitted through a client: wait with client.wait(job_id)")
        return self._client

    def __reduce__(self) -> tuple[type[str], tuple[str]]:
        return (str, (self.job_id,))


class Submitted(list[str]):
    """What `submit_many` stored: the jobs' ids (this list, in the order given) and the
    swarm's id (None unless ``swarm=True``), with waits for all of them."""

    swarm_id: str | None
    #: The id of the swarm's follow-up (``then=``), known at once; None: no follow-up.
    follow_up: str | None

    def __init__(
        self, job_ids: Iterable[str], swarm_id: str | None, client: Any = None, follow_up: str | None = None
    ) -> None:
        super().__init__(job_ids)
        self.swarm_id = swarm_id
        self.follow_up = follow_up
        self._client = client

    @property
    def job_ids(self) -> list[str]:
        """The ids, in the order given (a plain list)."""
        return list(self)

    def wait(self, timeout: float | None = None) -> Any:
        """Every job's `swarmd.JobResult`, in submit order, once all are recorded."""
        return self._bound().wait_many(self.job_ids, timeout, check_ids=False)

    def results(self, timeout: float | None = None) -> Any:
        """What each handler returned, in submit order; raises `JobFailed` for the first job
        (in that order) that did not succeed."""
        return self._bound().results_of(self.job_ids, timeout, check_ids=False)

    def as_completed(self, timeout: float | None = None) -> Any:
        """Each job's `swarmd.JobResult`, once, as it is recorded."""
        return self._bound().as_completed(job_ids=self.job_ids, timeout=timeout, check_ids=False)

    def _bound(self) -> Any:
        if self._client is None:
            raise RuntimeError(
                "these jobs were not submitted through a client (a handler's children are written when its "
                "outcome commits): wait for them with a client's wait_many(job_ids)"
            )
        return self._client

    def __repr__(self) -> str:
        follow_up = f", follow_up={self.follow_up!r}" if self.follow_up else ""
        return f"Submitted(job_ids={self.job_ids!r}, swarm_id={self.swarm_id!r}{follow_up})"
