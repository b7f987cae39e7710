"""Every error swarmd raises on purpose, under one root.

Each exception carries the data a caller needs to act on it (which field, which value, which
pid), so that the CLI can print a precise message and a program can branch on attributes
rather than parse text. Each also keeps the built-in base a caller may already catch
(``ValueError``, ``LookupError``, ``OSError``, ``RuntimeError``)::

    SwarmdError
    ├── JobValidationError (ValueError)       a job, or a request to make one, is malformed
    │   └── UnknownAgentError                 ... because it names an agent nobody registered
    ├── LedgerError                           a ledger entry was refused, or its store failed
    │   ├── LedgerEntryError (ValueError)     ... because the entry is malformed
    │   └── ArchiveError                      ... an archive segment or anchor is unusable
    ├── ConfigError (ValueError)              a configuration value is wrong
    ├── TracingConfigError (ValueError)       an OTEL_* variable asks for what this build cannot do
    ├── StateDirError                         the state directory cannot be used (or is not safe)
    ├── StateVersionError                     the stored state was written by a newer swarmd
    ├── StateCorrupt                          the state database is damaged
    ├── DaemonAlreadyRunning                  another daemon holds the state directory
    ├── JobNotFound (LookupError)             no such job or swarm
    ├── WaitTimeout (TimeoutError)            a wait for a job or a swarm ran out of time
    ├── JobFailed                             a job whose result was asked for did not succeed
    ├── ResultTooLarge                        a handler returned more than max_result_bytes
    ├── WorkflowError (RuntimeError)          ctx.submit used where no daemon can commit it
    ├── BackendUnavailable                    the queue backend cannot take work right now
    ├── ListenError (OSError)                 the HTTP listener cannot bind its address
    ├── ApiError                              the API socket refused a request, or cannot be used
    │   ├── ApiRefused (PermissionError)      ... access control: this peer may not do that
    │   └── ApiProtocolError (ValueError)     ... a frame or request is malformed or too large
    ├── CliError                              a command-line argument is wrong
    └── BenchError (RuntimeError)             a benchmark did not do the work it measures

`Permanent` is not among them: it is not an error of swarmd but a handler's way of saying
"do not retry this job", and it stays outside the tree so that ``except SwarmdError`` never
swallows it.

`describe` and `type_name` format any exception — a handler's included — without ever raising:
every log line, span, ledger entry and health message that shows an error goes through them.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final, Protocol

#: Longest message `describe` returns (a handler's exception can carry megabytes).
MAX_MESSAGE: Final = 2000


class JobResultLike(Protocol):
    """What `JobFailed` needs of the result it carries (a `swarmd.JobResult`)."""

    @property
    def job_id(self) -> str: ...

    @property
    def outcome(self) -> str: ...

    @property
    def error(self) -> dict[str, Any] | None: ...


class SwarmdError(Exception):
    """Root of every error swarmd raises on purpose."""


class JobValidationError(SwarmdError, ValueError):
    """A job (or a request to make one) is malformed.

    ``field`` names the offending field (``"payload"``, ``"gid"``, ``"$"`` for the whole
    document) and ``reason`` says what is wrong with it.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"invalid job: {field}: {reason}")


class UnknownAgentError(JobValidationError):
    """A job names an agent that no loaded module registered."""

    def __init__(self, agent: str, known: list[str]) -> None:
        self.agent = agent
        self.known = known
        listing = ", ".join(sorted(known)) or "none"
        super().__init__("agent", f"unknown agent {agent!r} (registered: {listing})")


class LedgerError(SwarmdError):
    """A ledger entry was refused, or the ledger store failed."""


class LedgerEntryError(LedgerError, ValueError):
    """A ledger entry is malformed; nothing was written."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"invalid ledger entry: {field}: {reason}")


class ArchiveError(LedgerError):
    """An archive of the ledger cannot be used: ``where`` (a segment file, an archive directory,
    an anchor given on the command line) and ``reason`` say what is wrong; nothing was written."""

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"{where}: {reason}")


class ConfigError(SwarmdError, ValueError):
    """A configuration value is wrong.

    ``key`` is the dotted key (``"max_concurrent"``) and ``source`` where it came from
    (a file path, ``"environment"``, ``"command line"``).
    """

    def __init__(self, key: str, reason: str, source: str = "") -> None:
        self.key = key
        self.reason = reason
        self.source = source
        where = f" (in {source})" if source else ""
        super().__init__(f"config error: {key}: {reason}{where}")


class StateDirError(SwarmdError):
    """The state directory cannot be used (missing permissions, not a directory, ...)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"state directory {path}: {reason}")


class DaemonAlreadyRunning(SwarmdError):
    """Another daemon holds the state directory's lock."""

    def __init__(self, path: str, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        holder = f"pid {pid}" if pid is not None else "another process"
        super().__init__(f"state directory {path} is in use by a running daemon ({holder})")


class JobNotFound(SwarmdError, LookupError):
    """No job with that id (or swarm with that id) exists in the queue or the ledger."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(f"not found: {what}")


class WaitTimeout(SwarmdError, TimeoutError):
    """A wait for a job (or a swarm) ran out of time before its outcome was recorded.

    ``job_ids`` are the jobs still unfinished and ``timeout`` the seconds waited.
    """

    def __init__(self, job_ids: list[str], timeout: float) -> None:
        self.job_ids = job_ids
        self.timeout = timeout
        shown = ", ".join(job_ids[:3]) + (f" and {len(job_ids) - 3} more" if len(job_ids) > 3 else "")
        super().__init__(f"no outcome after {timeout:g}s for {shown}")


class JobFailed(SwarmdError):
    """The job whose result was asked for failed, was dead-lettered or was cancelled.

    ``result`` is its `swarmd.JobResult` (outcome, error with type, message and traceback).
    """

    def __init__(self, result: JobResultLike) -> None:
        self.result = result
        error = result.error or {}
        detail = f"{error.get('type', '')}: {error.get('message', '')}".strip(": ")
        super().__init__(f"job {result.job_id} {result.outcome}" + (f": {detail}" if detail else ""))


class ResultTooLarge(SwarmdError):
    """A handler returned a result larger, encoded, than ``max_result_bytes``: the job fails
    permanently with this error (``size`` and ``limit`` in bytes), its result not kept."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"result of {size} bytes exceeds max_result_bytes ({limit} bytes)")


class WorkflowError(SwarmdError, RuntimeError):
    """``ctx.submit`` (or ``ctx.swarm_results``) was used where no daemon can commit it: outside
    a handler the daemon runs, or after the handler returned."""


class BackendUnavailable(SwarmdError):
    """The queue backend cannot be reached or refuses work right now (retryable)."""


class TracingConfigError(SwarmdError, ValueError):
    """An ``OTEL_*`` variable asks for something this build cannot do.

    ``variable`` names the variable, ``value`` is its value and ``reason`` what is wrong.
    """

    def __init__(self, variable: str, value: str, reason: str) -> None:
        self.variable = variable
        self.value = value
        self.reason = reason
        super().__init__(f"{variable}={value!r}: {reason}")


class ListenError(SwarmdError, OSError):
    """The HTTP listener cannot bind its address (in use, not available, not permitted).

    ``host``, ``port`` and ``reason`` say which address and why; ``errno`` is the
    underlying error number when there is one.
    """

    def __init__(self, host: str, port: int, reason: str, errno: int | None = None) -> None:
        self.host = host
        self.port = port
        self.reason = reason
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        super().__init__(f"cannot listen on {address}: {reason}")
        self.errno = errno


class CliError(SwarmdError):
    """A command-line argument is wrong (the CLI exits 2)."""


class BenchError(SwarmdError, RuntimeError):
    """A benchmark scenario did not do the work it measures (a missing ledger entry, a broken chain)."""


class Permanent(Exception):
    """Raised by a handler to fail its job without any retry.

    ``raise swarmd.Permanent("bad input")``, or ``raise Permanent from exc``; the job is
    dead-lettered at once with this exception as its reason.
    """


class StateVersionError(SwarmdError):
    """The stored state (an SQLite file, a Redis prefix) was written by a newer swarmd.

    ``where`` names it, ``found`` is its schema version and ``known`` the newest this swarmd
    knows. Nothing was read or written: state is never migrated backwards, and reading a newer
    layout could misread it.
    """

    def __init__(self, where: str, found: int, known: int) -> None:
        self.where = where
        self.found = found
        self.known = known
        super().__init__(
            f"{where} has state schema version {found}, newer than this swarmd knows (up to {known}): "
            f"run a swarmd release that knows version {found}, or restore a backup made with this one"
        )


class StateCorrupt(SwarmdError):
    """The state database is damaged (SQLite finds it malformed, or not a database at all).

    ``path`` names the file and ``reason`` what SQLite said. Nothing more is written to it.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"state database {path} is damaged ({reason}): stop every daemon using it, keep a copy, then "
            f"restore it from a backup, or salvage what is readable with: sqlite3 {path} .recover"
        )


def type_name(exc: BaseException) -> str:
    """The name of ``exc``'s type, never raising (a metaclass can make even that fail)."""
    try:
        name = type(exc).__name__
    except asyncio.CancelledError:
        raise
    except BaseException:
        return "BaseException"
    return name if type(name) is str else "BaseException"


def describe(exc: BaseException, *, limit: int = MAX_MESSAGE) -> str:
    """``str(exc)``, at most ``limit`` characters, never raising: an exception whose
    ``__str__`` raises (or returns something that is not a string) is described by its type
    name and that fact, so that formatting an error can never become a second error."""
    try:
        text = str(exc)
        if type(text) is not str:  # a str subclass may override slicing and more
            raise TypeError(f"__str__ returned {type(text).__name__}")
        return text[:limit]
    except asyncio.CancelledError:
        raise
    except BaseException:
        return f"<{type_name(exc)}: str() failed>"


def error_text(exc: BaseException) -> str:
    """``"Type: message"`` for logs and health messages, never raising (see `describe`); an
    exception group names its first few members too."""
    message = describe(exc)
    text = f"{type_name(exc)}: {message}" if message else type_name(exc)
    if isinstance(exc, BaseExceptionGroup):
        members = "; ".join(error_text(member) for member in exc.exceptions[:5])
        text = f"{text} [{members}]"
    return text


class ApiError(SwarmdError):
    """The daemon's API socket refused a request, or cannot be reached (``swarmd.api``)."""


class ApiRefused(ApiError, PermissionError):
    """Access control refused a request: connecting to the socket, or submitting for a GID.

    ``reason`` is a short code (the label of ``swarmd_api_refused_total``: ``gid_not_allowed``,
    ``not_listed``, ``connect``) and ``detail`` says what was refused and why. Nothing was written.
    """

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"refused ({reason}): {detail}")


class ApiProtocolError(ApiError, ValueError):
    """A frame or request on the API socket is malformed, oversized or of an unknown version.

    ``field`` names what was wrong (``"frame"``, ``"args.limit"``...). The daemon replies with
    this error and, for a bad frame, closes the connection.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"API request: {field}: {reason}")
