"""The public surface: what `import swarmd` promises, and nothing that needs an optional extra."""

from __future__ import annotations

import subprocess
import sys

import swarmd

REPORT_API = {"AsyncSwarmDispatcher", "AgentTask", "SharedLedger", "DispatchMetrics"}


def test_the_reports_api_and_the_client_are_exported() -> None:
    assert REPORT_API | {"Client", "AsyncClient", "agent", "JobContext", "Permanent", "SwarmdError"} <= set(
        swarmd.__all__
    )
    for name in swarmd.__all__:
        assert getattr(swarmd, name) is not None, name


def test_every_error_swarmd_raises_on_purpose_derives_from_swarmd_error() -> None:
    errors = [getattr(swarmd, name) for name in swarmd.__all__ if name.endswith(("Error", "Running", "Found"))]
    assert errors and all(issubclass(error, swarmd.SwarmdError) for error in errors)


def test_importing_swarmd_needs_no_optional_extra() -> None:
    # The README's first command installs swarmd without the redis and otlp extras.
    probe = (
        "import sys; sys.modules['redis'] = None; "
        "sys.modules['opentelemetry.exporter.otlp.proto.http.trace_exporter'] = None; "
        "import swarmd, swarmd.cli.commands, swarmd.runtime.daemon, swarmd.cli.demo; print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert result.stdout.strip() == "ok", result.stderr
