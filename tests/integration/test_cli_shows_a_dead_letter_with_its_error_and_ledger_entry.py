"""A dead-lettered job, as `swarmd status`, `status --swarm`, `jobs` and `dlq list` show it: its
outcome and ledger index from the entry its death wrote, and its error as an object in ``--json``
(never JSON text inside a string) and readably in the plain listing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
from support.harness import ledger_count, running, swarmd, wait_until

pytestmark = pytest.mark.slow


def _json(*args: str) -> Any:
    return msgspec.json.decode(swarmd(*args, "--json").stdout)


def test_a_dead_letter_shows_its_outcome_index_and_error_object(tmp_path: Path) -> None:
    state = tmp_path / "state"
    common = ("--state-dir", str(state))
    with running(state, "--agents", "support.agents"):
        submitted = _json("submit", *common, "--agent", "permanent", "--gid", "G-1", "--swarm")
        assert isinstance(submitted, dict)
        [job_id], swarm_id = submitted["job_ids"], submitted["swarm_id"]
        wait_until(lambda: ledger_count(state) == 1, what="the dead letter's ledger entry")
    status = _json("status", *common, job_id)
    [member] = _json("status", *common, "--swarm", swarm_id)
    [listed] = _json("jobs", *common, "--state", "dead")
    [letter] = _json("dlq", "list", *common)
    for info in (status, member, listed, letter):
        assert isinstance(info, dict)
        assert (info["state"], info["outcome"], info["ledger_index"]) == ("dead", "dead_lettered", 0)
        assert info["error"]["type"] == "Permanent" and info["error"]["message"] == "permanent failure on purpose"
    plain = swarmd("status", *common, job_id).stdout
    assert "ledger=0" in plain and "error: Permanent: permanent failure on purpose" in plain
    assert '{"' not in plain and "\\" not in plain


def test_dlq_list_says_how_many_more_dead_letters_there_are(tmp_path: Path) -> None:
    state = tmp_path / "state"
    common = ("--state-dir", str(state))
    with running(state, "--agents", "support.agents"):
        swarmd("submit", *common, "--agent", "permanent", "--gid", "G-1", "--count", "3")
        wait_until(lambda: ledger_count(state) == 3, what="three dead letters")
    result = swarmd("dlq", "list", *common, "--limit", "1")
    assert len(result.stdout.splitlines()) == 1 and result.stderr == "… and 2 more (use --limit)\n"
    assert swarmd("dlq", "list", *common).stderr == ""
