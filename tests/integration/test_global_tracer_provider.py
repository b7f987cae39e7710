"""Tracing made the global provider: spans of handler code (tracers obtained before install,
as modules do) become children of the job's span. A provider is global once per process, so the
check runs in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def test_install_global_makes_handler_spans_children(tmp_path: Path) -> None:
    # The global provider can be set once per process: prove it in a child process.
    script = textwrap.dedent(
        """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from swarmd.telemetry.tracing import Tracing

        handler_tracer = trace.get_tracer("handler")  # obtained before install, as modules do
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracing = Tracing(provider)
        tracing.install_global()
        with tracing.consumer("q", job_id="j", gid="g", agent="a", attempt=1,
                              traceparent=None) as span:
            with handler_tracer.start_as_current_span("inner"):
                pass
        inner, process = exporter.get_finished_spans()
        assert inner.parent.span_id == process.context.span_id, (inner, process)
        print("ok")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "ok\n", "")
