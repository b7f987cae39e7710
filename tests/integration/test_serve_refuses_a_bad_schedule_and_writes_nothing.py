"""`swarmd serve` with a bad schedule stops at the start, exit code 2, with a message naming the
table and key, and writes no state: a malformed cron expression, an unknown time zone, an agent
the daemon does not load, a table without a gid."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.harness import free_port, swarmd

from swarmd.queue.sqlite.backend import DB_NAME

GOOD = 'agent = "echo"\ngid = "GID-1"\ncron = "*/5 * * * *"\n'


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('agent = "echo"\ngid = "GID-1"\ncron = "*/5 * * * * * * *"\n', "schedule[1].cron: '*/5 * * * * * * *' has 8"),
        (GOOD + 'timezone = "Europe/Atlantis"\n', "schedule[1].timezone: unknown time zone 'Europe/Atlantis'"),
        ('agent = "report"\ngid = "GID-1"\ncron = "@hourly"\n', "schedule[1].agent: unknown agent 'report'"),
        ('agent = "sleep"\ncron = "@hourly"\n', "schedule[1].gid: missing"),
    ],
)
def test_a_bad_schedule_stops_serve_before_any_write(tmp_path: Path, table: str, message: str) -> None:
    config = tmp_path / "swarmd.toml"
    config.write_text(f'[[schedule]]\nname = "good"\n{GOOD}\n[[schedule]]\n{table}')
    state = tmp_path / "state"
    result = swarmd(
        "serve", "--state-dir", str(state), "--config", str(config), "--metrics-listen", f"127.0.0.1:{free_port()}",
        check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not (state / DB_NAME).exists()
