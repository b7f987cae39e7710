"""`swarmd jobs` says how many more jobs there are than it listed, and filters by agent, gid and
swarm; `swarmd cancel --agent/--gid/--state/--all` cancels what they select only with ``--yes``
(without it: how many it would cancel, on stderr, exit 1, nothing cancelled)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from support.harness import ledger_count, queue_states, swarmd

pytestmark = pytest.mark.slow


def _submit(state: Path, agent: str, gid: str, count: int, *extra: str) -> list[str]:
    out = swarmd(
        "submit", "--state-dir", str(state), "--agent", agent, "--gid", gid, "--count", str(count), "--json", *extra
    ).stdout
    return list(msgspec.json.decode(out)["job_ids"])


def _jobs(state: Path, *args: str) -> tuple[list[str], str]:
    result = swarmd("jobs", "--state-dir", str(state), *args)
    return [line.split()[0] for line in result.stdout.splitlines()], result.stderr


def test_jobs_says_how_many_more_and_filters(tmp_path: Path) -> None:
    state = tmp_path / "state"
    echo = _submit(state, "echo", "G-1", 5)
    sleepy = _submit(state, "sleep", "G-2", 2, "--delay", "600")
    swarm = msgspec.json.decode(
        swarmd(
            "submit", "--state-dir", str(state), "--agent", "echo", "--gid", "G-3", "--count", "2", "--swarm", "--json"
        ).stdout
    )
    listed, err = _jobs(state, "--limit", "3")
    assert len(listed) == 3 and err == "… and 6 more (use --limit)\n"
    listed, err = _jobs(state)
    assert len(listed) == 9 and err == ""
    assert _jobs(state, "--agent", "sleep") == (sleepy, "")
    assert _jobs(state, "--gid", "G-1", "--limit", "2") == (echo[:2], "… and 3 more (use --limit)\n")
    assert _jobs(state, "--swarm", swarm["swarm_id"]) == (swarm["job_ids"], "")
    assert _jobs(state, "--agent", "echo", "--state", "delayed") == ([], "")
    assert "(default: 100)" in " ".join(swarmd("jobs", "--help").stdout.split())


def test_a_bulk_cancel_without_yes_counts_and_cancels_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    _submit(state, "echo", "G-1", 4)
    _submit(state, "sleep", "G-2", 3, "--delay", "600")
    result = swarmd("cancel", "--state-dir", str(state), "--all", check=False)
    assert result.returncode == 1 and result.stdout == ""
    assert (
        result.stderr == "would cancel 7 queued or running jobs (--all); nothing cancelled: add --yes to cancel them\n"
    )
    result = swarmd("cancel", "--state-dir", str(state), "--agent", "sleep", check=False)
    assert result.returncode == 1
    assert "would cancel 3 queued or running jobs (--agent sleep)" in result.stderr
    assert queue_states(state) == {"ready": 4, "delayed": 3} and ledger_count(state) == 0


def test_a_bulk_cancel_with_yes_cancels_exactly_what_it_selects(tmp_path: Path) -> None:
    state = tmp_path / "state"
    echo = _submit(state, "echo", "G-1", 4)
    later = _submit(state, "echo", "G-2", 2, "--delay", "600")
    other = _submit(state, "sleep", "G-1", 1)
    cancelled = swarmd("cancel", "--state-dir", str(state), "--state", "delayed", "--yes").stdout.split()
    assert sorted(cancelled) == sorted(later)
    cancelled = swarmd("cancel", "--state-dir", str(state), "--agent", "echo", "--gid", "G-1", "--yes").stdout.split()
    assert sorted(cancelled) == sorted(echo)
    assert _jobs(state) == (other, "")
    result = swarmd("cancel", "--state-dir", str(state), "--agent", "nobody", "--yes")
    assert result.stderr == "nothing to cancel: no queued or running job matches\n"
    assert swarmd("cancel", "--state-dir", str(state), "--all", "--yes", "--json").stdout.strip() == (
        f'{{"cancelled":["{other[0]}"]}}'
    )
    assert ledger_count(state) == 7


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--all", "--agent", "echo", "--yes"], "cancel --all selects every job"),
        (["--yes"], "cancel needs one of"),
        (["some-job", "--agent", "echo"], "cancel needs one of"),
        (["some-job", "--yes"], "--yes confirms a cancel by"),
        (["--state", "dead", "--yes"], "invalid choice: 'dead'"),
    ],
)
def test_a_muddled_cancel_is_refused_and_cancels_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    state = tmp_path / "state"
    _submit(state, "echo", "G-1", 2)
    result = swarmd("cancel", "--state-dir", str(state), *args, check=False)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert queue_states(state) == {"ready": 2} and ledger_count(state) == 0
