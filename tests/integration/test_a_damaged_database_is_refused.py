"""A state database damaged in the middle of the file: the daemon refuses to start on it (it
would append to a damaged file), and every command says which file is damaged and what to do,
never a traceback."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from support.harness import free_port, swarmd

from swarmd import Client, DurableLedger


@pytest.fixture
def damaged_state(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    with Client(state) as client:  # a real state dir, made by swarmd
        client.submit("echo", gid="G1", payload="queued")

    async def fill() -> None:
        ledger = DurableLedger(state / "swarmd.db")
        for index in range(400):
            await ledger.append({"agent_gid": "G1", "job_id": f"J{index}", "padding": "p" * 200})
        await ledger.close()

    asyncio.run(fill())
    database = state / "swarmd.db"
    with sqlite3.connect(database) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    assert pages > 12
    with database.open("r+b") as handle:  # scribble over a page in the middle of the ledger
        handle.seek(page_size * (pages // 2))
        handle.write(b"\xa5" * page_size)
    return state


def test_the_daemon_refuses_a_damaged_database(damaged_state: Path) -> None:
    listen = f"127.0.0.1:{free_port()}"
    result = swarmd("serve", "--state-dir", str(damaged_state), "--metrics-listen", listen, check=False, timeout=60)
    assert result.returncode != 0
    assert f"state database {damaged_state / 'swarmd.db'} is damaged" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [["ledger", "verify"], ["ledger", "export"], ["ledger", "tail", "-n", "400"]])
def test_commands_name_the_damaged_file_and_the_way_out(damaged_state: Path, command: list[str]) -> None:
    result = swarmd(*command, "--state-dir", str(damaged_state), check=False)
    assert result.returncode == 1, result.stderr
    assert f"state database {damaged_state / 'swarmd.db'} is damaged" in result.stderr
    assert ".recover" in result.stderr
    assert "Traceback" not in result.stderr
