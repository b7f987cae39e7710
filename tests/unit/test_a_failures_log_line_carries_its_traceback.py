"""The log line of a failure (a retry, a dead letter) carries the traceback its ledger entry keeps,
and a result over max_result_bytes is a ResultTooLarge failure, never a success without its result.

In-process worker on a real SQLite file; the waits are for conditions with a deadline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from structlog.testing import capture_logs
from support.worker import job, until, worker

from swarmd.registry import AgentPolicy


def _nested(n: int) -> None:
    raise KeyError(f"missing {n}")


async def flaky(ctx: Any, payload: Any) -> None:
    _nested(ctx.job.attempt)


async def oversized(ctx: Any, payload: Any) -> str:
    return "x" * 100


async def test_retry_and_dead_letter_log_lines_carry_the_traceback(tmp_path: Path) -> None:
    with capture_logs() as events:
        async with worker(tmp_path, {"flaky": (flaky, AgentPolicy(max_attempts=2))}) as (backend, _):
            [job_id] = await backend.submit([job("flaky")])
            await until(lambda: _has_entry(backend))
            [entry] = await backend.ledger_entries()
    by_event = {e["event"]: e for e in events if e["event"] in ("job_retry", "job_dead_lettered")}
    assert "in _nested" in by_event["job_retry"]["traceback"]
    assert by_event["job_retry"]["traceback"].rstrip().endswith("KeyError: 'missing 1'")
    error = entry.decoded()["error"]
    assert by_event["job_dead_lettered"]["traceback"] == error["traceback"]
    assert error["traceback"].rstrip().endswith("KeyError: 'missing 2'") and entry.job_id == job_id


async def test_a_result_over_the_limit_fails_the_job_with_result_too_large(tmp_path: Path) -> None:
    async with worker(tmp_path, {"oversized": (oversized, AgentPolicy(max_attempts=3))}, max_result_bytes=101) as (
        backend,
        _,
    ):
        await backend.submit([job("oversized")])
        await until(lambda: _has_entry(backend))
        [entry] = await backend.ledger_entries()
    record = entry.decoded()
    assert record["outcome"] == "dead_lettered" and record["attempt"] == 1 and "result" not in record
    assert record["error"]["type"] == "ResultTooLarge" and record["error"]["permanent"] is True
    assert record["error"]["message"] == "result of 102 bytes exceeds max_result_bytes (101 bytes)"


async def _has_entry(backend: Any) -> bool:
    return len(await backend.ledger_entries()) >= 1
