"""The one error tree: every error swarmd raises on purpose is a SwarmdError, defined in
swarmd.errors, documented, and still catchable by the built-in base it always had."""

from __future__ import annotations

import inspect

import pytest

from swarmd import errors
from swarmd.bench import helpers as bench
from swarmd.cli import commands as cli
from swarmd.runtime import httpserver
from swarmd.telemetry import tracing

#: Each error and the built-in base callers may already catch it by.
SECOND_BASES: dict[type[BaseException], type[BaseException] | None] = {
    errors.JobValidationError: ValueError,
    errors.UnknownAgentError: ValueError,
    errors.LedgerError: None,
    errors.LedgerEntryError: ValueError,
    errors.ConfigError: ValueError,
    errors.TracingConfigError: ValueError,
    errors.StateDirError: None,
    errors.StateVersionError: None,
    errors.StateCorrupt: None,
    errors.DaemonAlreadyRunning: None,
    errors.JobNotFound: LookupError,
    errors.WaitTimeout: TimeoutError,
    errors.JobFailed: None,
    errors.ResultTooLarge: None,
    errors.WorkflowError: RuntimeError,
    errors.BackendUnavailable: None,
    errors.ArchiveError: None,
    errors.ListenError: OSError,
    errors.CliError: None,
    errors.BenchError: RuntimeError,
    errors.ApiError: None,
    errors.ApiRefused: PermissionError,
    errors.ApiProtocolError: ValueError,
}


def _defined_errors() -> set[type[BaseException]]:
    return {
        value
        for value in vars(errors).values()
        if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == errors.__name__
    }


def test_every_error_but_permanent_derives_from_the_one_root() -> None:
    defined = _defined_errors()
    assert defined == {errors.SwarmdError, errors.Permanent, *SECOND_BASES}
    for error in defined - {errors.Permanent}:
        assert issubclass(error, errors.SwarmdError), error
    # A handler's "do not retry" is not an error of swarmd: `except SwarmdError` must not catch it.
    assert not issubclass(errors.Permanent, errors.SwarmdError)


@pytest.mark.parametrize("error", list(SECOND_BASES), ids=lambda error: error.__name__)
def test_each_error_keeps_its_built_in_base_and_has_a_docstring(error: type[BaseException]) -> None:
    base = SECOND_BASES[error]
    if base is not None:
        assert issubclass(error, base)
    assert error.__doc__ and error.__doc__.strip()
    assert f"{error.__name__}" in (errors.__doc__ or ""), "the module docstring shows the whole tree"


def test_the_old_import_paths_name_the_same_classes() -> None:
    assert httpserver.ListenError is errors.ListenError
    assert tracing.TracingConfigError is errors.TracingConfigError
    assert bench.BenchError is errors.BenchError
    assert cli.CliError is errors.CliError


def test_listen_error_keeps_its_message_and_errno() -> None:
    error = errors.ListenError("::1", 9464, "Address already in use", 98)
    assert str(error) == "cannot listen on [::1]:9464: Address already in use"
    assert (error.host, error.port, error.reason, error.errno) == ("::1", 9464, "Address already in use", 98)
    assert (
        str(errors.ListenError("127.0.0.1", 80, "Permission denied"))
        == "cannot listen on 127.0.0.1:80: Permission denied"
    )
