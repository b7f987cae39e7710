"""Settings: command-line flags > ``SWARMD_*`` environment > TOML file > defaults.

Every key is documented here, where it is defined, and in ``deploy/swarmd.toml``, the example
config that lists them all. Errors name the key and where the bad value came from.
"""

from __future__ import annotations

import enum
import math
import os
import re
import tomllib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal, NoReturn
from urllib.parse import SplitResult, urlsplit

import msgspec

from swarmd.errors import ConfigError
from swarmd.schedules import Schedule, ScheduleSettings

DEFAULT_CONFIG_PATH: Final = Path("/etc/swarmd/swarmd.toml")
ENV_PREFIX: Final = "SWARMD_"
#: Largest config file read, in bytes: a config is a few KiB; this bounds a mistaken /dev/zero.
MAX_CONFIG_BYTES: Final = 1024 * 1024
#: Largest value of any number setting (seconds, rates, ratios): ~31 years in seconds. Larger
#: values and inf/nan are refused where they are read, before any arithmetic can overflow.
MAX_NUMBER: Final = 1e9
REDIS_SCHEMES: Final = ("redis", "rediss", "unix")

#: A duration setting: a number and a unit (s, m, h, d, w; none: seconds).
DURATION_PATTERN: Final = r"^[0-9]{1,9}(\.[0-9]{1,6})?[smhdw]?\Z"
_DURATION_UNITS: Final = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}

Positive = Annotated[float, msgspec.Meta(gt=0)]
#: A span of time: a number and a unit, s, m, h, d or w (``90s``, ``5m``, ``30d``); seconds alone.
Duration = Annotated[str, msgspec.Meta(pattern=DURATION_PATTERN)]

#: Most worker processes one daemon runs (a bound for ``workers``; a label value each).
MAX_WORKERS: Final = 64
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]


class LogLevel(enum.StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class AgentSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[agent.NAME]``: per-agent policy, overriding what the agent's module declared."""

    #: Attempts before a failing job is dead-lettered.
    max_attempts: PositiveInt | None = None
    #: Seconds a handler may run before it is cancelled (outcome timed_out).
    timeout: Positive | None = None
    #: Backoff between attempts: full jitter in [0, min(backoff_cap, backoff_base * 2**retry)].
    backoff_base: Positive | None = None
    backoff_cap: Positive | None = None
    #: At most this many of this agent's jobs run at once.
    concurrency: PositiveInt | None = None
    #: Token bucket: jobs started per second, and the burst.
    rate: Positive | None = None
    burst: PositiveInt | None = None
    #: Exception types (``module:Name``) that fail a job at once, without retry.
    permanent: list[str] = msgspec.field(default_factory=list)


class ApiSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[api]``: who may submit through the API socket (see swarmd.policies.api_access)."""

    #: ``[api.allow]``: user names, or ``@group`` names, to the GID patterns (fnmatch) they may
    #: submit as. Empty: anyone who can connect to the socket may submit any GID.
    allow: dict[str, list[str]] = msgspec.field(default_factory=dict)


class Settings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Everything `swarmd serve` can be told. See deploy/swarmd.toml for the commented list."""

    # -- where -----------------------------------------------------------------------------
    #: State directory (queue, ledger, lock). None: $STATE_DIRECTORY, else $XDG_STATE_HOME/swarmd.
    state_dir: str | None = None
    #: Modules whose @agent handlers to load (besides the built-ins sleep, echo, fail).
    agents: list[str] = msgspec.field(default_factory=list)
    #: Directories searched for those modules first (SWARMD_AGENTS_PATH: separated by ":"). Then
    #: the working directory, unless it is the state directory (the systemd unit's
    #: WorkingDirectory) or writable by group, others or another user; then sys.path.
    agents_path: list[str] = msgspec.field(default_factory=list)
    #: HTTP listener for /metrics, /healthz, /readyz.
    metrics_listen: str = "127.0.0.1:9464"
    #: Allow metrics_listen on a non-loopback address.
    allow_remote_metrics: bool = False
    # -- logs ------------------------------------------------------------------------------
    log_level: LogLevel = LogLevel.INFO
    #: "auto" (JSON unless stdout is a TTY), "json" or "console".
    log_format: Annotated[str, msgspec.Meta(pattern=r"^(auto|json|console)\Z")] = "auto"
    # -- queue -----------------------------------------------------------------------------
    #: "sqlite" (local file, the default) or "redis" (several daemons on several hosts).
    backend: Annotated[str, msgspec.Meta(pattern=r"^(sqlite|redis)\Z")] = "sqlite"
    #: SQLite durability: "full" survives power loss; "normal" survives a process crash only.
    durability: Annotated[str, msgspec.Meta(pattern=r"^(full|normal)\Z")] = "full"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}\Z")] = "swarmd"
    #: Run on a Redis without AOF persistence (acknowledged work may be lost on a restart).
    allow_volatile_redis: bool = False
    #: Queue name (the stream for Redis; the span name "process <queue>").
    queue: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}\Z")] = "default"
    #: Seconds a reservation holds a job; renewed every lease_seconds/3 while it runs.
    lease_seconds: Annotated[float, msgspec.Meta(ge=1)] = 30.0
    #: Most jobs reserved in one round trip.
    reserve_batch: PositiveInt = 512
    #: Most jobs reserved ahead of free slots (see swarmd.runtime.reserve_ahead; 0: none).
    reserve_ahead: Annotated[int, msgspec.Meta(ge=0)] = 1024
    #: Longest idle wait before looking at the queue again (wake-ups make it immediate).
    poll_interval: Positive = 1.0
    # -- concurrency -----------------------------------------------------------------------
    #: Most handlers running at once (the upper bound of the adaptive limit).
    max_concurrent: PositiveInt = 256
    #: "fixed" or "adaptive" (AIMD on agent latency and failures, within min/max).
    concurrency: Annotated[str, msgspec.Meta(pattern=r"^(fixed|adaptive)\Z")] = "fixed"
    min_concurrent: PositiveInt = 1
    #: Worker processes that pull and run jobs, sharing the queue ("auto": one per CPU this
    #: process may use). 1 runs everything in one process; more start a supervisor that holds
    #: the state lock, the HTTP listener and sd_notify (see swarmd.runtime.supervisor).
    workers: Annotated[int, msgspec.Meta(ge=1, le=MAX_WORKERS)] | Literal["auto"] = 1
    # -- policies --------------------------------------------------------------------------
    #: Attempts before a failing job is dead-lettered (agents and jobs may override).
    max_attempts: PositiveInt = 3
    #: Seconds a handler may run (agents and jobs may override).
    default_timeout: Positive = 300.0
    backoff_base: Positive = 0.5
    backoff_cap: Positive = 60.0
    #: Circuit breaker per agent: opens after this many consecutive failures...
    breaker_failures: PositiveInt = 5
    #: ...or when the failure ratio over the last breaker_window results reaches this (0-1).
    breaker_ratio: Annotated[float, msgspec.Meta(gt=0, le=1)] | None = None
    breaker_window: PositiveInt = 20
    #: Seconds an open breaker defers the agent's jobs before letting one trial through.
    breaker_cooldown: Positive = 30.0
    # -- life cycle ------------------------------------------------------------------------
    #: Seconds running jobs get to finish after SIGTERM before they are returned to the queue.
    grace_seconds: Annotated[float, msgspec.Meta(ge=0)] = 30.0
    #: A job running each time the daemon crashed (an exception escaped it: not a kill), this
    #: many times, is dead-lettered as poison instead of run again (0: never; see
    #: swarmd.runtime.crashes).
    poison_after: Annotated[int, msgspec.Meta(ge=0)] = 2
    #: Largest encoded job payload accepted at submit, in bytes.
    max_payload_bytes: PositiveInt = 1024 * 1024
    #: Largest encoded result a handler may return, in bytes: a larger one fails its job
    #: permanently with ResultTooLarge (the result is not kept).
    max_result_bytes: PositiveInt = 64 * 1024
    # -- bounded state (see README "Running for a long time") ------------------------------
    #: How long a finished job's idempotency key (and, on Redis, its swarm's membership set)
    #: is kept after it finished: a duration like 90s, 15m, 12h, 7d or 2w. Within it,
    #: resubmitting the key returns the first job; after it, the key is forgotten.
    result_ttl: Duration = "7d"
    #: How long a job id stays refused after its ledger entry was archived (or dropped): a
    #: resubmitted id is refused, and a late outcome (a lost lease) writes nothing. After it,
    #: the id is forgotten: it may be submitted again as a new job, and an outcome arriving
    #: that late would be written a second time. None: ``result_ttl``, or lease_seconds plus
    #: the longest configured handler timeout if that is longer; a value under that is refused.
    archived_id_ttl: Duration | None = None
    #: Per-agent overrides: [agent.NAME] tables.
    agent: dict[str, AgentSettings] = msgspec.field(default_factory=dict)
    # -- API socket (producers who are not the daemon's user; see swarmd.api) ---------------
    #: Unix socket the daemon serves. None: $RUNTIME_DIRECTORY/swarmd.sock under systemd, else
    #: api.sock in the state directory. Producers use it with --socket or SWARMD_SOCKET.
    api_socket: str | None = None
    #: Group the socket file belongs to (mode 0660): its members may connect. None: the
    #: daemon's own group. A group that does not exist stops the daemon at start.
    api_group: str | None = None
    #: ``[api]``: the ``allow`` table of user/group -> GID patterns.
    api: ApiSettings = msgspec.field(default_factory=ApiSettings)
    # -- schedules (see swarmd.schedules) ------------------------------------------------------
    #: ``[[schedule]]`` tables: agent, gid, cron, and optionally name, payload, timezone, catch_up.
    schedule: list[ScheduleSettings] = msgspec.field(default_factory=list)

    # -- ledger archive and anchors (see README "Archives and anchors") ----------------------
    #: Archive ledger entries finished longer ago than this (e.g. "30d"); None: keep them live.
    ledger_retention: Duration | None = None
    #: Archive the oldest entries beyond this many live ones; None: no count limit.
    ledger_max_entries: PositiveInt | None = None
    #: Where archive segments go. None: ``archive/`` in the state directory.
    archive_dir: str | None = None
    #: False: entries past the retention are DELETED, not archived (only the anchor and the
    #: archived job ids remain; `ledger verify --archive` can no longer walk from index 0).
    archive: bool = True
    #: How often the daemon logs ``ledger_checkpoint`` (index and hash of the last entry).
    checkpoint_interval: Duration = "5m"


#: Keys SIGHUP may change in a running daemon.
RELOADABLE: Final = frozenset({"max_concurrent", "min_concurrent", "log_level", "concurrency"})
_FIELDS: Final = {field.name: field for field in msgspec.structs.fields(Settings)}
_AGENT_FIELDS: Final = frozenset(field.name for field in msgspec.structs.fields(AgentSettings))
_SCHEDULE_FIELDS: Final = frozenset(field.name for field in msgspec.structs.fields(ScheduleSettings))
_AT_PATH = re.compile(r" - at `\$\.?([^`]*)`$")


def _raise_for(exc: msgspec.ValidationError, source: str, prefix: str = "") -> NoReturn:
    message = str(exc)
    match = _AT_PATH.search(message)
    unknown = re.search(r"unknown field `([^`]*)`", message)
    if match:
        raise ConfigError((prefix + match.group(1)).rstrip(".") or "$", message[: match.start()], source) from None
    if unknown:
        raise ConfigError(prefix + unknown.group(1), "unknown key", source) from None
    # No path in the message: the value at ``prefix`` itself is wrong (an [agent.NAME] that is no table).
    raise ConfigError(prefix.rstrip(".") or "$", message, source) from None


def _refuse_unknown(data: Mapping[str, Any], known: Collection[str], source: str, prefix: str = "") -> None:
    """Name an unknown key exactly (msgspec's message cannot quote every key unambiguously)."""
    for key in data:
        if key not in known:
            raise ConfigError(prefix + (key or '""'), "unknown key", source)


def read_file(path: Path) -> dict[str, Any]:
    """Parse a TOML config file; ConfigError names the file and the problem."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError("--config", f"file not found: {path}") from None
    except PermissionError:
        raise ConfigError("--config", f"cannot read {path}: permission denied") from None
    except IsADirectoryError:
        raise ConfigError("--config", f"{path} is a directory") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError("$", f"larger than {MAX_CONFIG_BYTES} bytes: not a config file", str(path))
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError("$", f"not valid UTF-8 (byte {exc.start})", str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("$", f"not valid TOML: {exc}", str(path)) from None
    _validate(data, str(path), strict=True)
    return data


def _validate(data: Mapping[str, Any], source: str, *, strict: bool) -> Settings:
    """Convert to Settings; ``[agent.NAME]`` tables first, so that errors name the agent."""
    _refuse_unknown(data, _FIELDS, source)
    agents = data.get("agent")
    if isinstance(agents, Mapping):
        for name, table in agents.items():
            if isinstance(table, Mapping):
                _refuse_unknown(table, _AGENT_FIELDS, source, prefix=f"agent.{name}.")
            try:
                msgspec.convert(table, AgentSettings, strict=strict)
            except msgspec.ValidationError as exc:
                _raise_for(exc, source, prefix=f"agent.{name}.")
    _validate_schedule_tables(data.get("schedule"), source, strict=strict)
    try:
        settings = msgspec.convert(data, Settings, strict=strict)
    except msgspec.ValidationError as exc:
        _raise_for(exc, source)
    _check_numbers(settings, source)
    for name, agent_settings in settings.agent.items():
        _check_numbers(agent_settings, source, prefix=f"agent.{name}.")
    check_redis_url(settings.redis_url, source)
    return settings


def _validate_schedule_tables(tables: Any, source: str, *, strict: bool) -> None:
    """``[[schedule]]`` tables one by one, so that an error names the table (``schedule[1].cron``):
    keys, types, the cron expression, the time zone, and names used once."""
    if not isinstance(tables, list):
        return  # absent, or not an array of tables: the conversion of Settings says so
    names: dict[str, int] = {}
    for position, table in enumerate(tables):
        where = f"schedule[{position}]"
        if isinstance(table, Mapping):
            _refuse_unknown(table, _SCHEDULE_FIELDS, source, prefix=f"{where}.")
        try:
            decoded = msgspec.convert(table, ScheduleSettings, strict=strict)
        except msgspec.ValidationError as exc:
            missing = re.match(r"Object missing required field `([^`]*)`$", str(exc))
            if missing:
                raise ConfigError(
                    f"{where}.{missing.group(1)}", "missing (every [[schedule]] needs one)", source
                ) from None
            _raise_for(exc, source, prefix=f"{where}.")
        schedule = Schedule.from_settings(decoded, where, source)
        if schedule.name in names:
            raise ConfigError(
                f"{where}.name",
                f"schedule {schedule.name!r} is also schedule[{names[schedule.name]}] (give one a distinct name)",
                source,
            )
        names[schedule.name] = position


def configured_schedules(settings: Settings) -> list[Schedule]:
    """The ``[[schedule]]`` tables of checked settings, as schedules."""
    return [Schedule.from_settings(table, f"schedule[{i}]") for i, table in enumerate(settings.schedule)]


def _check_numbers(values: msgspec.Struct, source: str, prefix: str = "") -> None:
    """Every number setting is finite and at most MAX_NUMBER (TOML allows inf and nan)."""
    for name in values.__struct_fields__:
        value = getattr(values, name)
        if isinstance(value, float) and not (math.isfinite(value) and value <= MAX_NUMBER):
            raise ConfigError(prefix + name, f"{value!r} is not a finite number up to {MAX_NUMBER:g}", source)


def read_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """``SWARMD_MAX_CONCURRENT=64`` → ``{"max_concurrent": "64"}`` (converted later)."""
    values: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key in (
            "config",
            "test_strict",
            "test_archive_crash",  # swarmd.ledger.archive.CRASH_ENV, the crash tests' hook
            "socket",
            "wait_backstop",
            "worker",
        ):  # SWARMD_SOCKET, _WAIT_BACKSTOP, _WORKER: read where they apply
            continue
        field = _FIELDS.get(key)
        if field is None or key in ("agent", "api", "schedule"):
            raise ConfigError(name, "unknown setting", "environment")
        if key == "agents":
            values[key] = [item.strip() for item in raw.split(",") if item.strip()]
        elif key == "agents_path":  # like PYTHONPATH
            values[key] = [item for item in raw.split(os.pathsep) if item.strip()]
        elif raw.strip().lower() in ("", "none", "null") and field.default is None:
            values[key] = None
        else:
            values[key] = raw
    return values


def load_settings(
    *,
    config_path: Path | None = None,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge the layers into Settings. ``config_path`` None: /etc/swarmd/swarmd.toml if present
    (or $SWARMD_CONFIG)."""
    environ = os.environ if environ is None else environ
    if config_path is None and environ.get("SWARMD_CONFIG"):
        config_path = Path(environ["SWARMD_CONFIG"])
    if config_path is None and DEFAULT_CONFIG_PATH.exists():
        config_path = DEFAULT_CONFIG_PATH
    merged: dict[str, Any] = read_file(config_path) if config_path is not None else {}
    env_values = read_environment(environ)
    env_settings = _validate({**merged, **env_values}, "environment", strict=False)
    merged.update({key: msgspec.to_builtins(getattr(env_settings, key)) for key in env_values})
    flag_values = {key: value for key, value in (flags or {}).items() if value is not None}
    return check(_validate({**merged, **flag_values}, "command line", strict=False))


def check_redis_url(url: str, source: str = "") -> SplitResult:
    """A redis://, rediss:// or unix:// URL with a valid port and database number."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError("redis_url", f"not a valid URL: {exc}", source) from None
    if parts.scheme not in REDIS_SCHEMES:
        schemes = ", ".join(REDIS_SCHEMES)
        raise ConfigError("redis_url", f"scheme {parts.scheme or '(none)'!r} is not one of {schemes}", source)
    if parts.scheme != "unix":
        if not parts.hostname:
            raise ConfigError("redis_url", "has no host", source)
        if port == 0:
            raise ConfigError("redis_url", "port 0 is not a port", source)
        database = parts.path.lstrip("/")
        if database and not (database.isdigit() and int(database) < 2**31):
            raise ConfigError("redis_url", f"database {database!r} is not a number", source)
    return parts


def check(settings: Settings) -> Settings:
    """Cross-field rules no single field can express."""
    if settings.min_concurrent > settings.max_concurrent:
        raise ConfigError("min_concurrent", f"{settings.min_concurrent} is above max_concurrent")
    if settings.backoff_cap < settings.backoff_base:
        raise ConfigError("backoff_cap", "must be >= backoff_base")
    host, _, port = settings.metrics_listen.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError("metrics_listen", f"{settings.metrics_listen!r} is not HOST:PORT")
    if not settings.allow_remote_metrics and host.strip("[]") not in ("127.0.0.1", "localhost", "::1"):
        raise ConfigError(
            "metrics_listen",
            f"{host} is not a loopback address; set allow_remote_metrics (--allow-remote-metrics) to expose it",
        )
    duration_seconds(settings.checkpoint_interval, "checkpoint_interval")  # each raises naming its key
    if settings.ledger_retention is not None:
        duration_seconds(settings.ledger_retention, "ledger_retention")
    result_ttl_seconds(settings)
    archived_id_ttl_seconds(settings)
    for name, agent in settings.agent.items():
        for spec in agent.permanent:
            if ":" not in spec:
                raise ConfigError(f"agent.{name}.permanent", f"{spec!r} is not 'module:ExceptionName'")
    return settings


def duration_seconds(text: str, key: str = "duration") -> float:
    """``90``, ``90s``, ``15m``, ``12h``, ``7d``, ``2w`` -> seconds, above 0 and at most
    MAX_NUMBER; anything else is a `ConfigError` naming ``key``."""
    match = re.fullmatch(r"([0-9]{1,9}(?:\.[0-9]{1,6})?)([smhdw]?)", text)
    if match is None:
        raise ConfigError(key, f"{text!r} is not a duration like 90s, 15m, 12h or 7d")
    seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if not 0 < seconds <= MAX_NUMBER:
        raise ConfigError(key, f"{text!r} must be above 0 and at most {MAX_NUMBER:g} seconds")
    return seconds


def result_ttl_seconds(settings: Settings) -> float:
    """`Settings.result_ttl` in seconds."""
    return duration_seconds(settings.result_ttl, "result_ttl")


def longest_stale_finish(settings: Settings) -> float:
    """The longest a late outcome can follow the job's ledger entry (a lease lost, the job run
    again elsewhere, the first run's outcome arriving last): the lease plus the longest
    configured handler timeout (a job's own ``timeout`` beyond these is the producer's risk)."""
    timeouts = [settings.default_timeout, *(a.timeout for a in settings.agent.values() if a.timeout is not None)]
    return settings.lease_seconds + max(timeouts)


def archived_id_ttl_seconds(settings: Settings) -> float:
    """`Settings.archived_id_ttl` in seconds: how long an archived job id is still refused.
    Unset: the longer of ``result_ttl`` and `longest_stale_finish`; set below the latter: a
    `ConfigError` (a late outcome could be written twice)."""
    floor = longest_stale_finish(settings)
    if settings.archived_id_ttl is None:
        return max(result_ttl_seconds(settings), floor)
    seconds = duration_seconds(settings.archived_id_ttl, "archived_id_ttl")
    if seconds < floor:
        raise ConfigError(
            "archived_id_ttl",
            f"{settings.archived_id_ttl!r} is shorter than lease_seconds plus the longest handler timeout "
            f"({floor:g} s): a late outcome of an archived job could be recorded twice",
        )
    return seconds


def archive_path(settings: Settings, state_dir: Path) -> Path:
    """Where archive segments go: ``archive_dir``, relative to the state directory, or ``archive/`` in it."""
    return state_dir / (settings.archive_dir or "archive")


def worker_count(settings: Settings) -> int:
    """How many worker processes ``workers`` means here: "auto" is the CPUs this process may
    run on (its affinity mask, which a cgroup's cpuset narrows), at most MAX_WORKERS."""
    if settings.workers == "auto":
        return max(1, min(MAX_WORKERS, len(os.sched_getaffinity(0))))
    return settings.workers


def listen_address(settings: Settings) -> tuple[str, int]:
    host, _, port = settings.metrics_listen.rpartition(":")
    return host.strip("[]"), int(port)


def resolve_state_dir(explicit: str | None, environ: Mapping[str, str] | None = None) -> Path:
    """--state-dir, else $STATE_DIRECTORY (systemd), else $XDG_STATE_HOME/swarmd."""
    environ = os.environ if environ is None else environ
    if explicit:
        return Path(explicit).expanduser()
    if environ.get("STATE_DIRECTORY"):
        return Path(environ["STATE_DIRECTORY"].split(":")[0])
    base = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "swarmd"


def resolve_api_socket(settings: Settings, state_dir: Path, environ: Mapping[str, str] | None = None) -> Path:
    """The API socket's path: ``api_socket``, else $RUNTIME_DIRECTORY/swarmd.sock (systemd),
    else api.sock in the state directory."""
    environ = os.environ if environ is None else environ
    if settings.api_socket:
        return Path(settings.api_socket).expanduser()
    if environ.get("RUNTIME_DIRECTORY"):
        return Path(environ["RUNTIME_DIRECTORY"].split(":")[0]) / "swarmd.sock"
    return state_dir / "api.sock"
