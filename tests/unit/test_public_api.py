"""The public surface: what `import swarmd` promises.

That it needs no optional extra is checked in a fresh interpreter: integration/test_import_without_extras.py.
"""

from __future__ import annotations

import inspect
import typing

import swarmd

REPORT_API = {"AsyncSwarmDispatcher", "AgentTask", "SharedLedger", "DispatchMetrics"}
#: Everything `import swarmd` promises: adding or removing a name is a decision made here.
PUBLIC_NAMES = {
    # producing and operating: the clients, and the types their methods take and return
    "AsyncClient",
    "Client",
    "JobHandle",
    "JobInfo",
    "JobResult",
    "JobState",
    "StoredEntry",
    "Submitted",
    "SwarmProgress",
    "VerifyReport",
    # the ledger's archive and anchors (Client.archive_ledger, check_anchors)
    "Anchor",
    "AnchorFinding",
    "ArchiveRun",
    # writing agents
    "Job",
    "JobContext",
    "Outcome",
    "Permanent",
    "agent",
    "get_gid",
    # the in-process library
    "AgentTask",
    "AsyncSwarmDispatcher",
    "DispatchMetrics",
    "DurableLedger",
    "Ledger",
    "SharedLedger",
    "TaskResult",
    # the errors a user of the above can meet
    "ArchiveError",
    "BackendUnavailable",
    "ConfigError",
    "DaemonAlreadyRunning",
    "JobFailed",
    "JobNotFound",
    "JobValidationError",
    "LedgerEntryError",
    "LedgerError",
    "ResultTooLarge",
    "ScheduleInfo",
    "StateDirError",
    "SwarmdError",
    "TracingConfigError",
    "UnknownAgentError",
    "WaitTimeout",
    "WorkflowError",
    "__version__",
}


def test_the_reports_api_and_the_client_are_exported() -> None:
    assert REPORT_API | {"Client", "AsyncClient", "agent", "JobContext", "Permanent", "SwarmdError"} <= set(
        swarmd.__all__
    )
    for name in swarmd.__all__:
        assert getattr(swarmd, name) is not None, name


def test_the_public_names_are_exactly_these() -> None:
    assert set(swarmd.__all__) == PUBLIC_NAMES
    assert len(swarmd.__all__) == len(PUBLIC_NAMES)


def _swarmd_classes(annotation: object) -> set[type]:
    """The swarmd classes an annotation names, however deeply nested (list[JobInfo], ...)."""
    found: set[type] = set()
    if isinstance(annotation, type) and annotation.__module__.startswith("swarmd."):
        found.add(annotation)
    for argument in typing.get_args(annotation):
        found |= _swarmd_classes(argument)
    return found


def test_every_type_a_client_method_returns_is_exported() -> None:
    for client in (swarmd.Client, swarmd.AsyncClient):
        for name, method in inspect.getmembers(client, inspect.isfunction):
            if name.startswith("_"):
                continue
            returned = _swarmd_classes(typing.get_type_hints(method).get("return"))
            for kind in returned:
                assert getattr(swarmd, kind.__name__, None) is kind, f"{client.__name__}.{name} returns {kind}"


def test_every_error_swarmd_raises_on_purpose_derives_from_swarmd_error() -> None:
    errors = [getattr(swarmd, name) for name in swarmd.__all__ if name.endswith(("Error", "Running", "Found"))]
    assert errors and all(issubclass(error, swarmd.SwarmdError) for error in errors)
