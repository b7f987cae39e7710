"""`swarmd demo`: the first thing a newcomer runs.

In a temporary state directory it starts a real daemon, submits a 50-agent swarm of 10 ms
agents through `swarmd.Client`, waits for the 50th ledger entry, and prints what the daemon's
own metrics and ledger say about it. Then it stops the daemon and removes the directory.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from swarmd.client import Client

AGENTS = 50
AGENT_SECONDS = 0.01


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    } | {
        "identity_violations": sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "swarmd_identity_violations_total"
        )
    }


def _wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(f"demo: timed out waiting for {what}")
        time.sleep(0.01)


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def run_demo() -> int:
    with tempfile.TemporaryDirectory(prefix="swarmd-demo-") as tmp:
        state = Path(tmp) / "state"
        port = _free_port()
        print(f"starting swarmd in {state} (metrics on 127.0.0.1:{port}) ...")
        env = dict(os.environ, OTEL_TRACES_EXPORTER=os.environ.get("OTEL_TRACES_EXPORTER", "none"))
        daemon = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "swarmd",
                "serve",
                "--state-dir",
                str(state),
                "--metrics-listen",
                f"127.0.0.1:{port}",
                "--log-level",
                "warning",
            ],
            env=env,
        )
        try:
            _wait(lambda: _ready(port) or daemon.poll() is not None, 30, "the daemon to be ready")
            if daemon.poll() is not None:
                print("the daemon did not start", file=sys.stderr)
                return 1
            with Client(state) as client:
                started = time.perf_counter()
                submitted = client.submit_many(
                    [
                        {"agent": "sleep", "gid": f"GID-{i:02}", "payload": {"seconds": AGENT_SECONDS}}
                        for i in range(AGENTS)
                    ],
                    swarm=True,
                )
                _wait(lambda: len(client.ledger()) >= AGENTS, 60, "the swarm to finish")
                wall = time.perf_counter() - started
                entries = [entry.decoded() for entry in client.ledger()]
                report = client.verify()
            metrics = _scrape(port)
        finally:
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(60)
        own = [e for e in entries if e.get("swarm_id") == submitted.swarm_id]
        wrong_gid = sum(1 for e in own if not e["agent_gid"].startswith("GID-"))
        overhead_sum = metrics.get("swarmd_swarm_overhead_seconds_sum", 0.0)
        print(f"swarm {submitted.swarm_id}: {AGENTS} agents x {AGENT_SECONDS * 1000:.0f} ms")
        print(f"  succeeded:              {sum(1 for e in own if e['outcome'] == 'succeeded')}/{AGENTS}")
        print(
            f"  scheduling overhead:    {overhead_sum * 1000:.2f} ms (daemon: first reserved -> last done,"
            " minus the longest agent)"
        )
        print(f"  submit -> last ledger commit: {wall * 1000:.1f} ms (seen from this client, polling)")
        print(f"  concurrent peak: {metrics.get('swarmd_concurrent_peak', 0):.0f}")
        print(f"  identity violations: {metrics['identity_violations']:.0f} (wrong GIDs in ledger: {wrong_gid})")
        print(f"  ledger verified: {'ok' if report.ok else 'BROKEN'} ({report.summary()})")
        print(f"daemon stopped (exit {code})")
        return 0 if report.ok and code == 0 else 1
