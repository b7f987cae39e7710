"""`swarmd demo`: the first thing a newcomer runs.

In a temporary state directory it starts a real daemon, submits a 50-agent swarm of 10 ms
agents through `swarmd.Client`, waits for its 50 results (``swarm.wait()``, the results API a
user would call), and prints them with what the daemon's own metrics and ledger say. Then it
stops the daemon and removes the directory.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from swarmd.client import Client
from swarmd.testing.daemon import LocalDaemon

AGENTS = 50
AGENT_SECONDS = 0.01


def run_demo() -> int:
    with tempfile.TemporaryDirectory(prefix="swarmd-demo-") as tmp:
        state = Path(tmp) / "state"
        daemon = LocalDaemon(state, log_level="warning")
        print(f"starting swarmd in {state} (metrics on 127.0.0.1:{daemon.port}) ...")
        with daemon, Client(state) as client:  # woken by the daemon's commits, through its socket
            started = time.perf_counter()
            submitted = client.submit_many(
                [
                    {"agent": "sleep", "gid": f"GID-{i:02}", "payload": {"seconds": AGENT_SECONDS}}
                    for i in range(AGENTS)
                ],
                swarm=True,
            )
            results = submitted.wait(timeout=60)  # woken by the commits, not by polling
            wall = time.perf_counter() - started
            report = client.verify()
            metrics = daemon.metric_totals()
        code = daemon.stop()
        wrong_gid = sum(1 for r in results if r.ok and not str(r.result.get("agent_gid", "")).startswith("GID-"))
        print(f"swarm {submitted.swarm_id}: {AGENTS} agents x {AGENT_SECONDS * 1000:.0f} ms")
        print(f"  succeeded:              {sum(1 for r in results if r.ok)}/{AGENTS}")
        print(f"  first result:           {results[0].job_id} -> {results[0].result}")
        print(
            f"  scheduling overhead:    {metrics.get('swarmd_swarm_overhead_seconds_sum', 0.0) * 1000:.2f} ms"
            " (first reserved -> last done, minus the longest agent)"
        )
        print(f"  submit -> all {AGENTS} results in hand: {wall * 1000:.1f} ms (swarm.wait())")
        print(f"  concurrent peak: {metrics.get('swarmd_concurrent_peak', 0):.0f}")
        violations = metrics.get("swarmd_identity_violations_total", 0.0)
        print(f"  identity violations: {violations:.0f} (wrong GIDs in results: {wrong_gid})")
        print(f"  ledger verified: {'ok' if report.ok else 'BROKEN'} ({report.summary()})")
        print(f"daemon stopped (exit {code})")
        return 0 if report.ok and code == 0 and all(r.ok for r in results) else 1
