"""`import swarmd` in a fresh interpreter needs no optional extra (redis, the OTLP exporter)."""

from __future__ import annotations

import subprocess
import sys


def test_importing_swarmd_needs_no_optional_extra() -> None:
    # The README's first command installs swarmd without the redis and otlp extras.
    probe = (
        "import sys; sys.modules['redis'] = None; "
        "sys.modules['opentelemetry.exporter.otlp.proto.http.trace_exporter'] = None; "
        "import swarmd, swarmd.cli.commands, swarmd.runtime.daemon, swarmd.cli.demo; print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert result.stdout.strip() == "ok", result.stderr
