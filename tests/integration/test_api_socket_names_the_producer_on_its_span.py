"""A producer going through the API socket puts who the daemon takes it for (its SO_PEERCRED
peer) on its PRODUCER span, as the daemon puts it on the job and its ledger entry."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support.harness import Daemon, ledger, ledger_count, wait_until

from swarmd.client import Client
from swarmd.telemetry.tracing import Tracing

pytestmark = pytest.mark.slow


def test_the_producer_span_and_the_ledger_entry_name_the_same_peer(tmp_path: Path) -> None:
    path = tmp_path / "api.sock"
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with Daemon(tmp_path / "state", env={"SWARMD_API_SOCKET": str(path)}):
        with Client(None, socket=path, tracing=Tracing(provider)) as client:
            (job_id,) = client.submit_many([{"agent": "echo", "gid": "GID-span"}]).job_ids
        wait_until(lambda: ledger_count(tmp_path / "state") == 1, what="the job in the ledger")
    (span,) = exporter.get_finished_spans()
    peer = f"uid:{os.geteuid()}({pwd.getpwuid(os.geteuid()).pw_name})/gid:{os.getegid()}/pid:{os.getpid()}"
    assert span.attributes is not None and span.attributes["swarmd.submitted_by"] == peer
    (entry,) = ledger(tmp_path / "state")
    assert (entry["job_id"], entry["submitted_by"]) == (job_id, peer)
