"""The public surface: what `import swarmd` promises.

That it needs no optional extra is checked in a fresh interpreter: integration/test_import_without_extras.py.
"""

from __future__ import annotations

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
