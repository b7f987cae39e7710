"""One pass of the daemon's retention loop forgets expired keys and refreshes the bounded-state
metrics from the real SQLite state: sizes by part, free bytes, the live ledger's length and
oldest entry, the pass's result, and how many keys it forgot. ``result_ttl`` is read as a
duration setting, and a bad one is refused naming the key."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from swarmd.config import Settings, check, load_settings, result_ttl_seconds
from swarmd.errors import ConfigError
from swarmd.ledger.records import OutcomeRecord
from swarmd.model import new_job
from swarmd.queue.base import Disposition, Finish
from swarmd.queue.sqlite.backend import SqliteBackend
from swarmd.runtime.retention import ResultExpiry, RetentionSwitch
from swarmd.telemetry.metrics import Metrics


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    assert value is not None, name
    return value


async def _three_finished(backend: SqliteBackend) -> list[float]:
    await backend.submit([new_job(agent="echo", gid="g", idempotency_key=f"k{i}") for i in range(3)])
    finished: list[float] = []
    for reserved in await backend.reserve(10, lease=30.0):
        finished.append(time.time())
        record = OutcomeRecord(
            job_id=reserved.job_id, gid=reserved.gid, agent=reserved.agent, outcome="succeeded",
            attempt=reserved.attempt, finished_at=finished[-1],
        ).encode()  # fmt: skip
        await backend.finish([Finish(reserved.job_id, Disposition.DONE, record=record, handle=reserved.handle)])
    return finished


async def test_a_pass_forgets_expired_keys_and_reports_sizes_ledger_and_result(tmp_path: Path) -> None:
    backend = SqliteBackend(tmp_path)
    await backend.open()
    try:
        finished = await _three_finished(backend)
        metrics = Metrics(CollectorRegistry())
        expiry = ResultExpiry(backend, Settings(result_ttl="1h"), metrics, tmp_path)
        (tmp_path / "archive").mkdir()
        (tmp_path / "archive" / "segment-0").write_bytes(b"x" * 1234)

        assert await expiry.run_once() == 0  # an hour has not passed
        assert sample(metrics, "swarmd_state_bytes", part="database") == (tmp_path / "swarmd.db").stat().st_size > 0
        assert sample(metrics, "swarmd_state_bytes", part="wal") == (tmp_path / "swarmd.db-wal").stat().st_size
        assert sample(metrics, "swarmd_state_bytes", part="archive") == 1234
        assert sample(metrics, "swarmd_state_filesystem_free_bytes") > 0
        assert sample(metrics, "swarmd_ledger_entries") == 3
        assert sample(metrics, "swarmd_ledger_oldest_timestamp_seconds") == finished[0]
        assert sample(metrics, "swarmd_retention_runs_total", result="ok") == 1
        assert sample(metrics, "swarmd_retention_last_run_timestamp_seconds") >= finished[-1]

        expiry.ttl = -1.0  # everything finished is now past result_ttl
        assert await expiry.run_once() == 3
        assert sample(metrics, "swarmd_finished_expired_total") == 3
        assert sample(metrics, "swarmd_retention_runs_total", result="ok") == 2
    finally:
        await backend.close()


async def test_a_pass_forgets_archived_ids_past_their_horizon_and_keeps_the_others(tmp_path: Path) -> None:
    """The same pass deletes the ``archived_ids`` rows whose horizon has passed (archived with
    a ``now`` long ago), not those still within it; with retention off, neither."""
    backend = SqliteBackend(tmp_path)
    await backend.open()
    try:
        await _three_finished(backend)
        long_ago = time.time() - 3 * 3600.0 - 330.0
        first = await backend.forget_ledger(1, None, remember_for=330.0, now=long_ago)
        await backend.forget_ledger(2, first, remember_for=330.0)
        metrics = Metrics(CollectorRegistry())
        off = ResultExpiry(backend, Settings(), metrics, tmp_path, RetentionSwitch.off())
        await off.run_once()
        assert _archived_rows(tmp_path) == 3
        await ResultExpiry(backend, Settings(), metrics, tmp_path).run_once()
        assert _archived_rows(tmp_path) == 1  # the entry archived just now is still remembered
    finally:
        await backend.close()


def _archived_rows(state: Path) -> int:
    with sqlite3.connect(state / "swarmd.db") as conn:
        return int(conn.execute("SELECT count(*) FROM archived_ids").fetchone()[0])


async def test_a_pass_that_fails_is_counted_and_leaves_the_last_run_time(tmp_path: Path) -> None:
    backend = SqliteBackend(tmp_path)
    await backend.open()
    metrics = Metrics(CollectorRegistry())
    expiry = ResultExpiry(backend, Settings(), metrics, tmp_path)
    await backend.close()  # the pass finds the backend gone

    assert await expiry.run_once() == 0
    assert sample(metrics, "swarmd_retention_runs_total", result="failed") == 1
    assert sample(metrics, "swarmd_retention_last_run_timestamp_seconds") == 0


async def test_with_retention_off_nothing_is_forgotten_but_sizes_are_still_reported(tmp_path: Path) -> None:
    backend = SqliteBackend(tmp_path)
    await backend.open()
    try:
        await _three_finished(backend)
        metrics = Metrics(CollectorRegistry())
        expiry = ResultExpiry(backend, Settings(), metrics, tmp_path, RetentionSwitch.off())
        expiry.ttl = -1.0
        assert await expiry.run_once() == 0
        assert sample(metrics, "swarmd_ledger_entries") == 3
        assert await backend.expire_finished(-1.0, 10) == 3, "the keys were all still there"
    finally:
        await backend.close()


@pytest.mark.parametrize(("text", "seconds"), [("7d", 604800.0), ("90", 90.0), ("1.5h", 5400.0), ("2w", 1209600.0)])
def test_result_ttl_is_a_duration(text: str, seconds: float) -> None:
    assert result_ttl_seconds(load_settings(flags={"result_ttl": text}, environ={})) == seconds


def test_result_ttl_defaults_to_seven_days() -> None:
    assert result_ttl_seconds(Settings()) == 7 * 86400


@pytest.mark.parametrize("text", ["a week", "7 d", "-1d", "7y", ""])
def test_a_bad_result_ttl_is_refused_naming_the_key(text: str) -> None:
    with pytest.raises(ConfigError, match="result_ttl"):
        load_settings(flags={"result_ttl": text}, environ={})


def test_a_zero_result_ttl_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"result_ttl.*above 0"):
        check(Settings(result_ttl="0s"))
