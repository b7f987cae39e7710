"""What one submit may ask for is bounded: a delay of at most a year, and one batch (one
transaction) of at most MAX_BATCH_BYTES, refused before it is all encoded and before anything
is written."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from swarmd import Client
from swarmd.errors import JobValidationError
from swarmd.model import MAX_DELAY_SECONDS, draft_job, new_job, seal


@pytest.mark.parametrize("delay", [1e308, float("inf"), float("nan"), 10**400, -1, MAX_DELAY_SECONDS + 1])
def test_delays_beyond_a_year_or_not_numbers_are_refused(delay: float) -> None:
    with pytest.raises(JobValidationError) as error:
        new_job(agent="echo", gid="G1", delay=delay)
    assert error.value.field == "delay"
    assert str(MAX_DELAY_SECONDS) in str(error.value)


@pytest.mark.parametrize("not_before", [1e308, 10**400])
def test_a_not_before_beyond_a_year_is_refused(not_before: float) -> None:
    with pytest.raises(JobValidationError) as error:
        new_job(agent="echo", gid="G1", not_before=not_before)
    assert error.value.field == "not_before"


def test_a_delay_of_a_year_is_accepted() -> None:
    now = time.time()
    job = new_job(agent="echo", gid="G1", delay=MAX_DELAY_SECONDS, now=now)
    assert job.not_before == now + MAX_DELAY_SECONDS


def test_a_batch_over_the_total_limit_is_refused_naming_the_limit() -> None:
    payload = "x" * 10_000  # each job encodes to a little over 10 kB
    drafts = [draft_job(agent="echo", gid="G1", payload=payload) for _ in range(100)]
    with pytest.raises(JobValidationError, match="over the limit of 50000 bytes in all") as error:
        seal(drafts, max_batch_bytes=50_000)
    assert "(reached at job 4)" in str(error.value)  # stopped at the fifth, not after encoding all 100
    assert len(seal(drafts[:4], max_batch_bytes=50_000)) == 4


def test_a_client_submit_over_the_limit_writes_nothing(tmp_path: Path) -> None:
    payload = "y" * (1024 * 1024 - 100)
    with Client(tmp_path / "state") as client:
        with pytest.raises(JobValidationError, match="bytes in all"):
            client.submit_many([{"agent": "echo", "gid": "G1", "payload": payload}] * 100)
        job_id = client.submit("echo", gid="G1", payload="small")
        assert client.status(job_id).state == "ready"
    with sqlite3.connect(tmp_path / "state" / "swarmd.db") as conn:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 1
