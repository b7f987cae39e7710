"""Security defaults of a real daemon, when nobody configured anything.

- `swarmd serve` refuses a public listener without --allow-remote-metrics and binds 127.0.0.1.
- The state directory is 0700 and every file in it 0600 (database, -wal, -shm, lock, wake
  socket), whatever the umask, whether the daemon or a client made it.
- A job that bypassed the client (written straight into the queue) with a payload over the
  caps is refused by the daemon (dead-lettered with its reason), which keeps running.
- Agent modules are imported from the config only: a job naming a module is an unknown agent.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from support.harness import Daemon, ledger, ledger_count, running, submit, swarmd, wait_until
from support.paths import REPO

from swarmd.client import Client
from swarmd.model import MAX_PAYLOAD_BYTES, MAX_PAYLOAD_DEPTH
from swarmd.testing.daemon import free_port


# -- the HTTP listener --------------------------------------------------------------------
@pytest.mark.slow
def test_the_real_daemon_refuses_a_public_listener_and_binds_loopback_only(tmp_path: Path) -> None:
    port = free_port()
    refused = swarmd("serve", "--state-dir", str(tmp_path / "s1"), "--metrics-listen", f"0.0.0.0:{port}", check=False)
    assert refused.returncode == 2 and "allow-remote-metrics" in refused.stderr
    assert not (tmp_path / "s1").exists()  # refused before anything was created
    with running(tmp_path / "s2") as daemon:
        # Its listening socket is bound to 127.0.0.1 exactly (not 0.0.0.0 or ::).
        assert f"0100007F:{daemon.port:04X}" in _listening_sockets(daemon.pid)


def _listening_sockets(pid: int) -> set[str]:
    """local_address of every listening TCP socket the process has open (from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.add(fields[1])
    return found


# -- file modes ----------------------------------------------------------------------------
@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    """Children started meanwhile inherit ``mask``."""
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def _loose(state: Path) -> dict[str, str]:
    """Every entry of the state directory (and the directory) that group or others can use."""
    entries = [state, *state.iterdir()]
    return {p.name: stat.filemode(p.lstat().st_mode) for p in entries if p.lstat().st_mode & 0o077}


@pytest.mark.slow
@pytest.mark.parametrize("mask", [0o022, 0o000], ids=["umask-022", "umask-000"])
@pytest.mark.parametrize("creator", ["daemon", "client"])
def test_state_directory_is_0700_and_its_files_0600(tmp_path: Path, mask: int, creator: str) -> None:
    state = tmp_path / "state"
    with umask(mask):
        if creator == "client":
            submit(state, "echo", "GID-m")
        daemon = Daemon(state).start()
    try:
        submit(state, "echo", "GID-m", count=3)
        wait_until(lambda: ledger_count(state) == (4 if creator == "client" else 3), what="the jobs")
        names = {p.name for p in state.iterdir()}
        assert {"swarmd.db", "swarmd.db-wal", "swarmd.db-shm", "swarmd.lock", "wake.sock", "api.sock"} <= names, names
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        assert _loose(state) == {}
    finally:
        daemon.ensure_dead()


# -- payloads that bypassed the client ------------------------------------------------------
def _insert_raw(state: Path, rows: list[tuple[str, str, bytes]]) -> None:
    """Jobs written straight into the queue, as a buggy or hostile producer could."""
    with contextlib.closing(sqlite3.connect(state / "swarmd.db")) as conn, conn:
        conn.executemany(
            "INSERT INTO jobs (id, agent, gid, state, body) VALUES (?, ?, 'GID-raw', 'ready', ?)",
            [(job_id, agent, body) for job_id, agent, body in rows],
        )


def _raw_job(job_id: str, agent: str, payload_json: bytes) -> bytes:
    return b'{"id": "%s", "gid": "GID-raw", "agent": "%s", "payload": %s}' % (
        job_id.encode(),
        agent.encode(),
        payload_json,
    )


@pytest.mark.slow
def test_the_daemon_refuses_a_payload_that_bypassed_the_client(tmp_path: Path) -> None:
    state = tmp_path / "state"
    good = submit(state, "echo", "GID-ok", payload="before")
    deep = b"[" * (MAX_PAYLOAD_DEPTH + 8) + b"]" * (MAX_PAYLOAD_DEPTH + 8)
    big = msgspec.json.encode("x" * (MAX_PAYLOAD_BYTES + 10))
    _insert_raw(state, [("raw-deep", "echo", _raw_job("raw-deep", "echo", deep))])
    _insert_raw(state, [("raw-big", "echo", _raw_job("raw-big", "echo", big))])
    with running(state) as daemon:
        wait_until(lambda: ledger_count(state) == 3, what="all three jobs")
        after = submit(state, "echo", "GID-ok", payload="after")
        wait_until(lambda: ledger_count(state) == 4, what="a job after the refused ones")
        assert daemon.metrics()['swarmd_rejected_jobs_total{reason="malformed"}'] == 2
    by_id = {entry["job_id"]: entry for entry in ledger(state)}
    assert by_id[good[0]]["outcome"] == by_id[after[0]]["outcome"] == "succeeded"
    assert by_id["raw-deep"]["outcome"] == "dead_lettered"
    assert "payload: nested deeper than 32 levels" in by_id["raw-deep"]["error"]["message"]
    assert by_id["raw-big"]["outcome"] == "dead_lettered"
    assert "payload: " in by_id["raw-big"]["error"]["message"]
    assert "over the limit" in by_id["raw-big"]["error"]["message"]
    assert "result" not in by_id["raw-big"]  # never ran: nothing echoed into the ledger


# -- agent modules come from the config only ---------------------------------------------------
PROBE = """
from pathlib import Path
Path(__file__).with_name("probe-was-imported").write_text("imported")
from swarmd import agent

@agent("probe")
async def probe(ctx, payload):
    return None
"""


@pytest.mark.slow
def test_a_job_naming_a_module_is_an_unknown_agent_and_imports_nothing(tmp_path: Path) -> None:
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "swarmd_probe_agent.py").write_text(PROBE)
    marker = modules / "probe-was-imported"
    env = {"PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests"), str(modules)])}
    state = tmp_path / "state"
    # The client refuses it: not a registered agent.
    result = swarmd(
        "submit", "--state-dir", str(state), "--agent", "swarmd_probe_agent", "--gid", "G", env=env, check=False
    )
    assert result.returncode == 2 and "unknown agent 'swarmd_probe_agent'" in result.stderr
    # A job that bypassed the client: dead-lettered as an unknown agent; the module is never imported.
    names = ["swarmd_probe_agent", "swarmd_probe_agent.probe", "os.system", "subprocess"]
    Client(state).close()
    _insert_raw(state, [(f"raw-{i}", name, _raw_job(f"raw-{i}", name, b"null")) for i, name in enumerate(names)])
    with running(state, env=env) as daemon:
        wait_until(lambda: ledger_count(state) == len(names), what="the jobs naming modules")
        assert daemon.metrics()['swarmd_rejected_jobs_total{reason="unknown_agent"}'] == len(names)
    assert not marker.exists(), "a job made the daemon import a module"
    entries = ledger(state)
    assert {entry["outcome"] for entry in entries} == {"dead_lettered"}
    assert all("no agent named" in entry["error"]["message"] for entry in entries)
    # Named in the config, the same module is loaded (so the probe above could have told).
    with running(tmp_path / "state2", "--agents", "swarmd_probe_agent", env=env):
        assert marker.exists()
