"""Structured logs: structlog JSON lines off a TTY, readable console output on one.

Every line carries what is bound in ``structlog.contextvars``, the ``job_id``, ``gid`` and
``agent`` of the job being run (:data:`job_context`, which the runner sets once per run: one
ContextVar set instead of three structlog bindings, on the hot path) and, while an
OpenTelemetry span is recording, its ``trace_id`` and ``span_id`` in hex::

    configure_logging("info")            # once, at start-up
    log = get_logger(component="daemon")
    log.info("listening", address="127.0.0.1:9464")
    set_level("debug")                   # SIGHUP: every logger, old or new, follows

Levels below the current one cost a call to a method that returns None. ``set_level``
swaps the level methods on the one wrapper class all swarmd loggers share, so loggers
obtained (and cached, or bound) before the change follow it at once. Output goes through
one sink whose stream :func:`configure_logging` may replace, for the same reason.

This module imports nothing from swarmd: telemetry sits below the dispatcher.
"""

from __future__ import annotations

import sys
import threading
from contextvars import ContextVar
from typing import Any, Final, Protocol, TextIO, cast

import msgspec
import structlog
from opentelemetry import trace
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

__all__ = [
    "LEVELS",
    "LoggedJob",
    "add_job_context",
    "add_trace_ids",
    "configure_logging",
    "debug_enabled",
    "get_logger",
    "job_context",
    "set_level",
]

#: Accepted level names (case-insensitive) and their numeric values.
LEVELS: Final = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40, "critical": 50}

_ENCODER: Final = msgspec.json.Encoder(enc_hook=repr)


class LoggedJob(Protocol):
    """What a log line takes from the job being run (swarmd's Job has these)."""

    @property
    def id(self) -> str: ...

    @property
    def gid(self) -> str: ...

    @property
    def agent(self) -> str: ...


#: The job this task runs (tasks it spawns inherit it), or None. The job itself, not a tuple of
#: its ids: nothing is allocated per job for the logs.
job_context: Final[ContextVar[LoggedJob | None]] = ContextVar("swarmd_job", default=None)


class _SwarmdLogger(structlog.BoundLoggerBase):
    """The wrapper class of every swarmd logger; its level methods are set by set_level."""


class _Sink:
    """The one output of every logger: writes a line and flushes it, under a lock."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._lock = threading.Lock()

    def msg(self, message: str) -> None:
        with self._lock:
            self.stream.write(message + "\n")
            self.stream.flush()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


_SINK: Final = _Sink(sys.stdout)
#: The current level's number (set_level keeps it).
_LEVEL: Final = [LEVELS["info"]]
# One list object for the life of the process: cached loggers hold a reference to it, so
# configure_logging (and structlog.testing.capture_logs) change what they run, in place.
_PROCESSORS: Final[list[Processor]] = []


def _sink_factory(*_args: Any) -> _Sink:
    return _SINK


def _level_number(level: str) -> int:
    try:
        return LEVELS[level.strip().lower()]
    except (KeyError, AttributeError):
        names = ", ".join(n for n in LEVELS if n != "warn")
        raise ValueError(f"invalid log level {level!r}: expected one of {names}") from None


def set_level(level: str) -> None:
    """Change the level of every swarmd logger, including those obtained earlier.

    Raises ValueError naming ``level`` if it is not one of :data:`LEVELS`.
    """
    number = _level_number(level)
    source = structlog.make_filtering_bound_logger(number)
    for name, value in vars(source).items():
        if not name.startswith("__"):
            setattr(_SwarmdLogger, name, value)
    _LEVEL[0] = number


def debug_enabled() -> bool:
    """Whether debug lines are written now: a per-job ``log.debug`` guarded by this costs a list
    read when filtered, instead of a pass through structlog's lazy logger proxy (~2 us)."""
    return _LEVEL[0] <= LEVELS["debug"]


def add_job_context(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Processor: ``job_id``, ``gid`` and ``agent`` of the job being run, if any (keys the
    call gives itself win)."""
    job = job_context.get()
    if job is not None:
        event_dict.setdefault("job_id", job.id)
        event_dict.setdefault("gid", job.gid)
        event_dict.setdefault("agent", job.agent)
    return event_dict


def add_trace_ids(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Processor: ``trace_id`` and ``span_id`` (hex) of the current span, if it is recording."""
    span = trace.get_current_span()
    if span.is_recording():
        ctx = span.get_span_context()
        event_dict["trace_id"] = trace.format_trace_id(ctx.trace_id)
        event_dict["span_id"] = trace.format_span_id(ctx.span_id)
    return event_dict


def _json_dumps(obj: Any, **_kw: Any) -> str:
    return _ENCODER.encode(obj).decode()


def configure_logging(level: str = "info", *, json: bool | None = None, stream: TextIO | None = None) -> None:
    """Configure structlog for the process (call again to reconfigure; loggers follow).

    ``json=None`` picks JSON lines unless ``stream`` (default ``sys.stdout``) is a TTY.
    Timestamps are ISO 8601 in UTC. Raises ValueError for an unknown ``level``.
    """
    set_level(level)  # validate first: a bad level changes nothing else
    out = sys.stdout if stream is None else stream
    is_tty = out.isatty()
    use_json = not is_tty if json is None else json
    common: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        add_job_context,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_ids,
    ]
    if use_json:
        tail: list[Processor] = [
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(serializer=_json_dumps),
        ]
    else:
        tail = [structlog.dev.ConsoleRenderer(colors=is_tty)]
    _SINK.stream = out
    _PROCESSORS[:] = [*common, *tail]
    structlog.configure(
        processors=_PROCESSORS,
        wrapper_class=_SwarmdLogger,
        context_class=dict,
        logger_factory=_sink_factory,
        cache_logger_on_first_use=True,
    )


def get_logger(**initial: Any) -> FilteringBoundLogger:
    """A logger carrying ``initial`` key/values on every line (cheap; cache it freely)."""
    return cast(FilteringBoundLogger, structlog.get_logger(**initial))


set_level("info")
