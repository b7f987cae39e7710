"""Producers who are not the daemon's user submit, read and cancel through its API socket.

A real daemon (root, as the tests run) serves a socket of mode 0660 in a throw-away group; the
producers are the real CLI run as ``nobody`` with ``setpriv``, inside or outside that group.
Every request is attributed to its SO_PEERCRED peer, and the ``[api.allow]`` table limits the
GIDs a producer may submit for.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from support.api import NOBODY, files_owned_by, open_directory, require_root, swarmd_as, throwaway_group
from support.harness import Daemon, ledger, ledger_count, submit, wait_until

pytestmark = pytest.mark.slow


class Setup(msgspec.Struct):
    state: Path
    socket: Path
    group: str
    gid: int


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    require_root()
    with throwaway_group() as (group, gid), open_directory() as run_dir:
        yield Setup(tmp_path / "state", run_dir / "swarmd.sock", group, gid)


def _daemon(setup: Setup, *args: str) -> Daemon:
    env = {"SWARMD_API_SOCKET": str(setup.socket), "SWARMD_API_GROUP": setup.group}
    return Daemon(setup.state, "--agents", "support.agents", *args, env=env)


def test_a_producer_in_the_group_submits_a_swarm_that_runs_attributed_to_it(setup: Setup) -> None:
    with _daemon(setup) as daemon:
        mode = setup.socket.lstat()
        assert stat.S_ISSOCK(mode.st_mode) and stat.S_IMODE(mode.st_mode) == 0o660
        assert mode.st_gid == setup.gid
        before = sorted(p.name for p in setup.state.iterdir())

        submitted = swarmd_as(
            NOBODY, [setup.gid], "submit", "--socket", str(setup.socket),
            "--agent", "echo", "--gid", "GID-7", "--count", "5", "--swarm", "--json",
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        swarm_id = msgspec.json.decode(submitted.stdout)["swarm_id"]

        def swarm_done() -> bool:  # polled through the socket, as the producer itself
            status = swarmd_as(
                NOBODY, [setup.gid], "status", "--socket", str(setup.socket), "--swarm", swarm_id, "--json"
            )
            assert status.returncode == 0, status.stderr
            members = msgspec.json.decode(status.stdout)
            return len(members) == 5 and all(member["state"] == "done" for member in members)

        wait_until(swarm_done, what="the swarm submitted through the socket to finish")
        assert daemon.metrics()['swarmd_api_refused_total{reason="gid_not_allowed"}'] == 0
        assert sorted(p.name for p in setup.state.iterdir()) == before

    entries = [entry for entry in ledger(setup.state) if entry.get("swarm_id") == swarm_id]
    assert len(entries) == 5
    for entry in entries:
        assert entry["outcome"] == "succeeded"
        assert entry["submitted_by"].startswith("uid:65534(nobody)/gid:65534/pid:")
    assert files_owned_by(setup.state, NOBODY[0]) == []  # the producer created nothing there


def test_a_producer_outside_the_group_gets_a_clear_permission_error(setup: Setup) -> None:
    with _daemon(setup):
        refused = swarmd_as(NOBODY, [], "submit", "--socket", str(setup.socket), "--agent", "echo", "--gid", "GID-7")
    assert refused.returncode != 0
    assert f"permission denied on the API socket {setup.socket}" in refused.stderr
    assert "add this user to the socket's group" in refused.stderr
    assert ledger_count(setup.state) == 0


def test_an_allow_rule_refuses_a_gid_outside_its_patterns_and_writes_nothing(setup: Setup, tmp_path: Path) -> None:
    config = tmp_path / "swarmd.toml"
    config.write_text('[api.allow]\n"nobody" = ["GID-1*"]\n"@root" = ["GID-root-*"]\n')
    with _daemon(setup, "--config", str(config)) as daemon:
        refused = swarmd_as(
            NOBODY, [setup.gid], "submit", "--socket", str(setup.socket),
            "--agent", "echo", "--gid", "GID-2", "--count", "3",
        )  # fmt: skip
        assert refused.returncode != 0
        assert "refused (gid_not_allowed): nobody may not submit for GID 'GID-2' (allowed: GID-1*)" in refused.stderr
        jobs = swarmd_as(NOBODY, [setup.gid], "jobs", "--socket", str(setup.socket), "--json")
        assert msgspec.json.decode(jobs.stdout) == []
        assert daemon.metrics()['swarmd_api_refused_total{reason="gid_not_allowed"}'] == 1

        # A GID its pattern matches is accepted.
        allowed = swarmd_as(
            NOBODY, [setup.gid], "submit", "--socket", str(setup.socket), "--agent", "echo", "--gid", "GID-10",
        )  # fmt: skip
        assert allowed.returncode == 0, allowed.stderr
        wait_until(lambda: ledger_count(setup.state) == 1, what="the allowed job in the ledger")
        assert daemon.metrics()['swarmd_api_refused_total{reason="gid_not_allowed"}'] == 1
    assert [entry["gid"] for entry in ledger(setup.state)] == ["GID-10"]


def test_a_client_finds_the_socket_when_the_state_is_not_its_own_and_says_both_paths_when_nothing_answers(
    setup: Setup,
) -> None:
    env = {"SWARMD_API_SOCKET": str(setup.socket)}
    with _daemon(setup):
        found = swarmd_as(
            NOBODY, [setup.gid], "submit", "--state-dir", str(setup.state),
            "--agent", "echo", "--gid", "GID-7", "--json", env=env,
        )  # fmt: skip
        assert found.returncode == 0, found.stderr
        wait_until(lambda: ledger_count(setup.state) == 1, what="the job in the ledger")
    assert ledger(setup.state)[0]["submitted_by"].startswith("uid:65534(nobody)")

    stopped = swarmd_as(
        NOBODY, [setup.gid], "submit", "--state-dir", str(setup.state), "--agent", "echo", "--gid", "G", env=env
    )
    assert stopped.returncode != 0
    assert f"state directory {setup.state}: permission denied; and no API socket answered" in stopped.stderr
    assert f"the API socket {setup.socket} (no such socket)" in stopped.stderr
    assert files_owned_by(setup.state, NOBODY[0]) == []


def test_a_producer_cancels_its_queued_job_through_the_socket(setup: Setup) -> None:
    with _daemon(setup):
        submitted = swarmd_as(
            NOBODY, [setup.gid], "submit", "--socket", str(setup.socket),
            "--agent", "echo", "--gid", "GID-7", "--delay", "3600", "--json",
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        (job_id,) = msgspec.json.decode(submitted.stdout)["job_ids"]
        cancelled = swarmd_as(NOBODY, [setup.gid], "cancel", "--socket", str(setup.socket), job_id, "--json")
        assert cancelled.returncode == 0, cancelled.stderr
        wait_until(lambda: ledger_count(setup.state) == 1, what="the cancellation in the ledger")
    assert ledger(setup.state)[0]["outcome"] == "cancelled"


def test_a_missing_api_group_stops_the_daemon_with_a_clear_error(setup: Setup) -> None:
    env = {"SWARMD_API_SOCKET": str(setup.socket), "SWARMD_API_GROUP": "swarmd-no-such-group"}
    daemon = Daemon(setup.state, env=env).start(wait_ready=False)
    try:
        assert daemon.wait(30) != 0
    finally:
        daemon.ensure_dead()
    assert "api_group: group 'swarmd-no-such-group' does not exist" in daemon.log()
    assert not os.path.lexists(setup.socket)


def test_an_allow_rule_refuses_cancelling_a_job_of_another_gid(setup: Setup, tmp_path: Path) -> None:
    config = tmp_path / "swarmd.toml"
    config.write_text('[api.allow]\n"nobody" = ["GID-1*"]\n')
    with _daemon(setup, "--config", str(config)) as daemon:
        # Root (always allowed) queues a job for GID-2, an hour ahead.
        (job_id,) = submit(setup.state, "echo", "GID-2", "--delay", "3600")
        refused = swarmd_as(NOBODY, [setup.gid], "cancel", "--socket", str(setup.socket), job_id)
        assert refused.returncode != 0
        assert "refused (gid_not_allowed): nobody may not cancel the jobs of GID 'GID-2'" in refused.stderr
        status = swarmd_as(NOBODY, [setup.gid], "status", "--socket", str(setup.socket), job_id, "--json")
        assert msgspec.json.decode(status.stdout)["state"] == "delayed"  # still queued, nothing written
        assert daemon.metrics()['swarmd_api_refused_total{reason="gid_not_allowed"}'] == 1
    assert ledger_count(setup.state) == 0


def test_filters_and_bulk_cancel_work_through_the_socket(setup: Setup) -> None:
    with _daemon(setup):
        sock = ["--socket", str(setup.socket)]
        for agent, gid in (("echo", "GID-a"), ("echo", "GID-b"), ("sleep", "GID-a")):
            made = swarmd_as(NOBODY, [setup.gid], "submit", *sock, "--agent", agent, "--gid", gid, "--delay", "3600")
            assert made.returncode == 0, made.stderr
        listed = swarmd_as(NOBODY, [setup.gid], "jobs", *sock, "--agent", "echo", "--gid", "GID-a", "--json")
        assert [(job["agent"], job["gid"]) for job in msgspec.json.decode(listed.stdout)] == [("echo", "GID-a")]
        dry = swarmd_as(NOBODY, [setup.gid], "cancel", *sock, "--gid", "GID-a")
        assert dry.returncode == 1 and "would cancel 2" in dry.stderr + dry.stdout
        done = swarmd_as(NOBODY, [setup.gid], "cancel", *sock, "--gid", "GID-a", "--yes")
        assert done.returncode == 0, done.stderr
        left = swarmd_as(NOBODY, [setup.gid], "jobs", *sock, "--json")
        assert [job["gid"] for job in msgspec.json.decode(left.stdout)] == ["GID-b"]
