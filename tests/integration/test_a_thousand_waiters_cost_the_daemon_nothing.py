"""1,000 clients waiting at once, in 10 processes, cost the daemon no measurable CPU while
nothing finishes: each wait is one pending request on its API socket, woken by the commit of
the outcome, not a loop that polls; and every one of them ends when its job's outcome commits."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.harness import base_env, running, submit

#: It reads the daemon's CPU time: never at once with another test that does (tests/README.md).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("measures_cpu")]

PROCESSES = 10
WAITS_EACH = 100
JOBS = PROCESSES * WAITS_EACH
#: The daemon's CPU allowed over the quiet window, as a share of one core: an idle daemon's own
#: ticks (heartbeat, housekeeping) fit easily; 1,000 waiters asking once a second would not.
CPU_SHARE = 0.05
WINDOW = 3.0

WAITER = """
import asyncio, sys
from swarmd import AsyncClient

async def main(state, ids):
    async with AsyncClient(state) as client:
        waits = [asyncio.ensure_future(client.wait(job_id)) for job_id in ids]
        await asyncio.sleep(0.5)  # every wait has looked once and asked the daemon
        print("waiting", flush=True)
        results = await asyncio.gather(*waits)
        print("done" if all(r.outcome == "succeeded" for r in results) else "failed", flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2:]))
"""


def test_a_thousand_waits_leave_the_daemon_idle_and_all_end_at_the_commit(tmp_path: Path) -> None:
    state = tmp_path / "state"
    # The jobs run and hold at a barrier of JOBS + 1 parties: running, idle, nothing finishing.
    held = {"key": "thousand", "parties": JOBS + 1}
    with running(state, "--agents", "support.agents", "--max-concurrent", str(JOBS + 10)) as daemon:
        jobs = submit(state, "barrier", "GID-w", payload=held, count=JOBS)
        waiters = [_waiter(state, jobs[i * WAITS_EACH : (i + 1) * WAITS_EACH]) for i in range(PROCESSES)]
        try:
            for waiter in waiters:
                assert waiter.stdout is not None and waiter.stdout.readline().strip() == "waiting"
            time.sleep(1.0)  # a settled start: the window below measures waiting alone
            before = daemon.cpu_seconds()
            time.sleep(WINDOW)  # the quiet window (a measurement, not a wait for a condition)
            used = daemon.cpu_seconds() - before
            assert used < CPU_SHARE * WINDOW, f"the daemon used {used:.3f} s of CPU in {WINDOW} s"
            submit(state, "barrier", "GID-w", payload=held)  # the last party: every job ends
            for waiter in waiters:
                assert waiter.stdout is not None and waiter.stdout.readline().strip() == "done"
                assert waiter.wait(60) == 0
        finally:
            for waiter in waiters:
                if waiter.poll() is None:
                    waiter.kill()
                    waiter.wait()
                if waiter.stdout is not None:
                    waiter.stdout.close()


def _waiter(state: Path, job_ids: list[str]) -> subprocess.Popen[str]:
    command = [sys.executable, "-c", WAITER, str(state), *job_ids]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=base_env())
