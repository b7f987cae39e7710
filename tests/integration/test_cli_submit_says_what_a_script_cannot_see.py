"""`swarmd submit` keeps stdout for job ids, one a line, and says on stderr what a person needs:
the swarm's id (which `status --swarm` and `cancel --swarm` take), that the state directory is
new, and that no daemon serves the queue yet (the job is kept all the same)."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest
from support.harness import queue_states, running, swarmd
from support.services import require_redis

pytestmark = pytest.mark.slow

NEW_STATE = "swarmd: note: creating a new state in"
NO_DAEMON = "swarmd: warning: no daemon is serving"


def _submit(state: Path, *extra: str) -> tuple[str, str]:
    result = swarmd("submit", "--state-dir", str(state), "--agent", "echo", "--gid", "G-1", *extra)
    return result.stdout, result.stderr


def test_a_swarm_submit_prints_the_job_ids_on_stdout_and_the_swarm_id_on_stderr(tmp_path: Path) -> None:
    state = tmp_path / "state"
    out, err = _submit(state, "--count", "3", "--swarm")
    job_ids = out.splitlines()
    assert len(job_ids) == 3 and all(len(job_id) == 32 for job_id in job_ids)
    [swarm_line] = [line for line in err.splitlines() if line.startswith("swarm: ")]
    swarm_id = swarm_line.removeprefix("swarm: ")
    members = msgspec.json.decode(swarmd("status", "--state-dir", str(state), "--swarm", swarm_id, "--json").stdout)
    assert sorted(member["job_id"] for member in members) == sorted(job_ids)
    out, err = _submit(state, "--count", "2")
    assert len(out.splitlines()) == 2 and "swarm:" not in err  # no swarm, no swarm line


def test_a_new_state_is_noted_and_no_daemon_is_warned_of_once_and_the_job_is_kept(tmp_path: Path) -> None:
    state = tmp_path / "state"
    _, err = _submit(state)
    lines = err.splitlines()
    assert lines == [
        f"{NEW_STATE} {state}",
        f"{NO_DAEMON} {state}; the job is kept and runs when one starts",
    ]
    assert queue_states(state) == {"ready": 1}
    _, err = _submit(state, "--count", "2")  # the state exists now: no note
    assert err.splitlines() == [f"{NO_DAEMON} {state}; the jobs are kept and run when one starts"]
    assert queue_states(state) == {"ready": 3}


def test_no_warning_while_a_daemon_serves_the_state(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with running(state):
        out, err = _submit(state)
    assert len(out.splitlines()) == 1
    assert err == ""


@pytest.mark.redis
def test_on_redis_no_daemon_is_warned_of_without_the_urls_credentials(tmp_path: Path) -> None:
    url = require_redis()
    prefix = f"cli-warn-{os.getpid()}-{os.urandom(3).hex()}"
    secret_url = url.replace("redis://", "redis://nobody:s3cret@", 1) if "@" not in url else url
    redis_args = ("--backend", "redis", "--redis-url", url, "--redis-prefix", prefix)
    try:
        out, err = _submit(tmp_path / "unused", *redis_args)
        assert len(out.splitlines()) == 1
        assert err.startswith(f"{NO_DAEMON} the queue on Redis 127.0.0.1:6379") and f"(prefix {prefix})" in err
        assert NEW_STATE not in err
        result = swarmd(
            "submit", "--agent", "echo", "--gid", "G-1", *redis_args[:2], "--redis-url", secret_url,
            "--redis-prefix", prefix, check=False,
        )  # fmt: skip
        assert "s3cret" not in result.stderr
    finally:
        import redis  # noqa: PLC0415 - the redis extra

        with redis.Redis.from_url(url) as client:
            keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))
            if keys:
                client.unlink(*keys)
