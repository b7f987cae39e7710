"""The `swarmd` command line.

Exit codes: 0 done; 1 the thing asked about is not well (job not found, ledger broken);
2 bad input (a malformed job, an unknown agent, a bad config, an unusable state directory).
Errors print one line, ``swarmd: error: ...``, that says what was wrong and where.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

import msgspec

from swarmd.client import Client, JobInfo
from swarmd.config import Settings, load_settings
from swarmd.errors import CliError as CliError  # noqa: PLC0414 - re-exported: commands.CliError
from swarmd.errors import (
    ConfigError,
    DaemonAlreadyRunning,
    JobNotFound,
    JobValidationError,
    ListenError,
    StateDirError,
    SwarmdError,
    TracingConfigError,
)
from swarmd.ledger.records import export_row
from swarmd.model import ID_PATTERN, MAX_PAYLOAD_BYTES, JobState, decode_payload
from swarmd.registry import build_registry
from swarmd.version import __version__

_json = msgspec.json.Encoder()
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_ID = re.compile(ID_PATTERN)
#: Most jobs one `submit --count` writes (they go in one transaction, built in memory first).
MAX_SUBMIT_COUNT = 100_000
#: Largest --limit / -n (SQLite integers are 64-bit; anything near that is a typo anyway).
MAX_LIMIT = 1_000_000_000


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``12h``, ``7d``, ``2w`` → seconds."""
    match = _DURATION.match(text)
    if not match:
        raise CliError(f"--older-than: {text!r} is not a duration like 90s, 15m, 12h or 7d")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _job_id(text: str) -> str:
    """argparse type of a JOB_ID / SWARM_ID: an id swarmd could have made, or exit 2 naming
    the argument (ids go into SQL and Redis keys as UTF-8: argv may hold undecodable bytes)."""
    if not _ID.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a job id (letters, digits, '_.:-', at most 64)")
    return text


def _limit(text: str) -> int:
    """argparse type of --limit and -n: an integer in [0, MAX_LIMIT]."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"{value} is not in [0, {MAX_LIMIT}]")
    return value


def _print_json(value: Any, out: TextIO | None = None) -> None:
    """One JSON line on ``out`` (default: the `sys.stdout` of the moment, as `print` writes to)."""
    (out or sys.stdout).write(_json.encode(value).decode() + "\n")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", help="state directory (default: $STATE_DIRECTORY or ~/.local/state/swarmd)")
    common.add_argument("--config", type=Path, help="TOML config file (default: /etc/swarmd/swarmd.toml if present)")
    common.add_argument("--backend", choices=["sqlite", "redis"], help="queue backend (default: sqlite)")
    common.add_argument("--redis-url", help="redis://HOST:PORT/DB for --backend redis")
    common.add_argument("--redis-prefix", help="key prefix on Redis (default: swarmd)")
    common.add_argument("--socket", help="the daemon's API socket, for producers who are not its user ($SWARMD_SOCKET)")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON")

    parser = argparse.ArgumentParser(prog="swarmd", description="Run swarms of agents, durably, in plain view.")
    parser.add_argument("--version", action="version", version=f"swarmd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", parents=[common], help="run the daemon")
    serve.add_argument("--metrics-listen", help="HOST:PORT for /metrics, /healthz, /readyz (default 127.0.0.1:9464)")
    serve.add_argument(
        "--allow-remote-metrics",
        action="store_true",
        default=None,
        help="allow --metrics-listen on a non-loopback address",
    )
    serve.add_argument("--agents", nargs="+", metavar="MODULE", help="modules whose @agent handlers to load")
    serve.add_argument("--max-concurrent", type=int, help="most handlers running at once")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--grace-seconds", type=float, help="drain grace period after SIGTERM")
    serve.add_argument(
        "--allow-volatile-redis",
        action="store_true",
        default=None,
        help="report ready on a Redis without AOF persistence",
    )

    submit = commands.add_parser("submit", parents=[common, as_json], help="submit jobs")
    submit.add_argument("--agent", required=True)
    submit.add_argument("--gid", required=True, help="the identity the agent speaks for")
    payload = submit.add_mutually_exclusive_group()
    payload.add_argument("--payload", help="JSON payload")
    payload.add_argument("--payload-file", help="file holding the JSON payload ('-': standard input)")
    submit.add_argument("--count", type=int, default=1, help="submit N jobs")
    submit.add_argument("--swarm", action="store_true", help="the N jobs form one swarm")
    submit.add_argument("--fail-fast", action="store_true", help="the swarm's first permanent failure cancels the rest")
    submit.add_argument("--priority", type=int, default=0, help="higher runs first (-100..100)")
    submit.add_argument("--delay", type=float, default=0.0, help="seconds before the job may start")
    submit.add_argument("--timeout", type=float, help="seconds the handler may run")
    submit.add_argument("--max-attempts", type=int, help="attempts before dead-lettering")
    submit.add_argument("--idempotency-key", help="a second submit with this key returns the first job's id")

    status = commands.add_parser("status", parents=[common, as_json], help="where a job (or a swarm) is")
    status.add_argument("job_id", nargs="?", type=_job_id)
    status.add_argument("--swarm", metavar="SWARM_ID", type=_job_id)

    jobs = commands.add_parser("jobs", parents=[common, as_json], help="list queued jobs")
    jobs.add_argument("--state", choices=["ready", "delayed", "leased", "dead"])
    jobs.add_argument("--limit", type=_limit, default=100)

    ledger = commands.add_parser("ledger", help="read and verify the ledger")
    ledger_commands = ledger.add_subparsers(dest="ledger_command", required=True, metavar="SUBCOMMAND")
    tail = ledger_commands.add_parser("tail", parents=[common, as_json], help="the last entries")
    tail.add_argument("-n", type=_limit, default=10)
    ledger_commands.add_parser("export", parents=[common], help="every entry as a JSON line")
    ledger_commands.add_parser("verify", parents=[common], help="prove the chain has no gap, duplicate or edit")

    dlq = commands.add_parser("dlq", help="dead letters")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="SUBCOMMAND")
    dlq_list = dlq_commands.add_parser("list", parents=[common, as_json], help="list dead letters")
    dlq_list.add_argument("--limit", type=_limit, default=100)
    requeue = dlq_commands.add_parser("requeue", parents=[common, as_json], help="run dead letters again")
    requeue.add_argument("job_id", nargs="?", type=_job_id)
    requeue.add_argument("--all", action="store_true")
    purge = dlq_commands.add_parser("purge", parents=[common], help="delete old dead letters")
    purge.add_argument("--older-than", required=True, metavar="DURATION", help="e.g. 7d, 12h, 30m")

    cancel = commands.add_parser("cancel", parents=[common, as_json], help="cancel a job or a swarm")
    cancel.add_argument("job_id", nargs="?", type=_job_id)
    cancel.add_argument("--swarm", metavar="SWARM_ID", type=_job_id)

    commands.add_parser("demo", help="start a daemon in a temporary directory, run a 50-agent swarm, report")
    bench = commands.add_parser("bench", parents=[as_json], help="measure swarmd against the bare-asyncio floor")
    bench.add_argument(
        "scenario", help="swarm, e2e, throughput, scale, instrumentation, redis-throughput, redis-e2e, soak, or all"
    )
    bench.add_argument("--agents", type=int, nargs="+", help="swarm sizes (swarm scenario)")
    bench.add_argument("--jobs", type=int, help="jobs (throughput, scale, instrumentation and soak scenarios)")
    bench.add_argument("--repeat", type=int, help="repetitions after the warm-up")
    return parser


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    flags = {
        "state_dir": getattr(args, "state_dir", None),
        "backend": getattr(args, "backend", None),
        "redis_url": getattr(args, "redis_url", None),
        "redis_prefix": getattr(args, "redis_prefix", None),
        **extra,
    }
    return load_settings(config_path=getattr(args, "config", None), flags=flags)


def _client(args: argparse.Namespace, settings: Settings | None = None, **kwargs: Any) -> Client:
    settings = settings or _settings(args)
    return Client(settings.state_dir, settings=settings, socket=getattr(args, "socket", None), **kwargs)


# -- commands ------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    from swarmd.runtime.daemon import serve  # noqa: PLC0415 - keep the other commands light

    flags = {
        "metrics_listen": args.metrics_listen,
        "allow_remote_metrics": args.allow_remote_metrics,
        "agents": args.agents,
        "max_concurrent": args.max_concurrent,
        "log_level": args.log_level,
        "grace_seconds": args.grace_seconds,
        "allow_volatile_redis": args.allow_volatile_redis,
    }
    settings = _settings(args, **flags)
    base_flags = {
        key: value for key, value in vars(args).items() if key in ("state_dir", "backend", "redis_url", "redis_prefix")
    }
    return serve(settings, config_path=args.config, flags={**base_flags, **flags})


def _read_payload(args: argparse.Namespace, limit: int) -> Any:
    if args.payload_file is not None:
        try:
            if args.payload_file == "-":
                raw = sys.stdin.buffer.read(limit + 1)
            else:
                with open(args.payload_file, "rb") as handle:
                    size = os.fstat(handle.fileno()).st_size
                    if size > limit:  # a regular file says how large it is: name its real size
                        raise JobValidationError(
                            "payload", f"{args.payload_file} is {size} bytes, over the limit of {limit}"
                        )
                    raw = handle.read(limit + 1)
        except OSError as exc:
            raise JobValidationError("payload", f"cannot read {args.payload_file}: {exc.strerror}") from None
        return decode_payload(raw, max_bytes=limit)
    if args.payload is not None:
        return decode_payload(args.payload, max_bytes=limit)
    return None


def _known_agents(settings: Settings, client: Client) -> set[str]:
    """The agents a submit may name: those a daemon with this config serves, and those any
    running daemon published."""
    return set(build_registry(settings.agents).names()) | set(client.published_agents() or ())


def cmd_submit(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if not 1 <= args.count <= MAX_SUBMIT_COUNT:
        raise CliError(f"--count must be between 1 and {MAX_SUBMIT_COUNT}")
    if args.fail_fast and not args.swarm:
        raise CliError("--fail-fast needs --swarm")
    payload = _read_payload(args, min(settings.max_payload_bytes, MAX_PAYLOAD_BYTES))
    with _client(args, settings) as client:
        client.known_agents = _known_agents(settings, client)
        spec: dict[str, Any] = {
            "agent": args.agent,
            "gid": args.gid,
            "payload": payload,
            "priority": args.priority,
            "delay": args.delay,
        }
        for key in ("timeout", "max_attempts", "idempotency_key"):
            if getattr(args, key) is not None:
                spec[key] = getattr(args, key)
        if args.idempotency_key is not None and args.count > 1:
            raise CliError("--idempotency-key names one job; it cannot go with --count")
        result = client.submit_many([spec] * args.count, swarm=args.swarm, fail_fast=args.fail_fast)
    if args.json:
        _print_json({"job_ids": result.job_ids, "swarm_id": result.swarm_id})
    else:
        sys.stdout.write("".join(f"{job_id}\n" for job_id in result.job_ids))
    return 0


def _print_infos(infos: list[JobInfo], as_json: bool) -> None:
    if as_json:
        _print_json([info.as_dict() for info in infos])
        return
    for info in infos:
        detail = info.outcome or info.state
        extra = f" error={info.error}" if info.error else ""
        index = f" ledger={info.ledger_index}" if info.ledger_index is not None else ""
        print(f"{info.job_id}  {detail:<13} agent={info.agent} gid={info.gid} attempt={info.attempt}{index}{extra}")


def cmd_status(args: argparse.Namespace) -> int:
    if (args.job_id is None) == (args.swarm is None):
        raise CliError("status needs a JOB_ID or --swarm SWARM_ID (not both)")
    with _client(args, read_only=True) as client:
        if args.swarm is not None:
            infos = client.swarm_status(args.swarm)
            _print_infos(infos, args.json)
        else:
            info = client.status(args.job_id)
            if args.json:
                _print_json(info.as_dict())
            else:
                _print_infos([info], False)
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    with _client(args, read_only=True) as client:
        state = JobState(args.state) if args.state is not None else None
        _print_infos(client.list_jobs(state, args.limit), args.json)
    return 0


def cmd_ledger(args: argparse.Namespace) -> int:
    with _client(args, read_only=True) as client:
        if args.ledger_command == "verify":
            report = client.verify()
            print(report.summary())
            return 0 if report.ok else 1
        if args.ledger_command == "export":
            for entry in client.iter_ledger():
                _print_json(export_row(entry))
            return 0
        for entry in client.ledger_tail(args.n):
            row = export_row(entry)
            if args.json:
                _print_json(row)
            else:
                print(
                    f"{row['index']:>8}  {row.get('outcome', '-'):<13} job={row['job_id']} gid={row['gid']} "
                    f"agent={row.get('agent', '-')} attempt={row.get('attempt', '-')} hash={row['hash'][:16]}"
                )
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
    with _client(args, read_only=args.dlq_command == "list") as client:
        if args.dlq_command == "list":
            _print_infos(client.dead_letters(args.limit), args.json)
        elif args.dlq_command == "requeue":
            if (args.job_id is None) == (not args.all):
                raise CliError("dlq requeue needs a JOB_ID or --all (not both)")
            pairs = client.requeue(args.job_id, all_dead=args.all)
            if args.json:
                _print_json([{"dead_job_id": old, "job_id": new} for old, new in pairs])
            else:
                for old, new in pairs:
                    print(f"{old} -> {new}")
        else:
            purged = client.purge_dead(parse_duration(args.older_than))
            print(f"purged {purged} dead letter{'' if purged == 1 else 's'}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    if (args.job_id is None) == (args.swarm is None):
        raise CliError("cancel needs a JOB_ID or --swarm SWARM_ID (not both)")
    with _client(args) as client:
        affected = client.cancel(args.job_id, swarm_id=args.swarm)
    if args.json:
        _print_json({"cancelled": affected})
    elif affected:
        print("\n".join(affected))
    else:
        print("nothing to cancel: already finished", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from swarmd.cli.demo import run_demo  # noqa: PLC0415

    return run_demo()


def cmd_bench(args: argparse.Namespace) -> int:
    from swarmd.bench.runner import run_bench  # noqa: PLC0415

    return run_bench(args.scenario, as_json=args.json, agents=args.agents, jobs=args.jobs, repeat=args.repeat)


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "serve": cmd_serve,
    "submit": cmd_submit,
    "status": cmd_status,
    "jobs": cmd_jobs,
    "ledger": cmd_ledger,
    "dlq": cmd_dlq,
    "cancel": cmd_cancel,
    "demo": cmd_demo,
    "bench": cmd_bench,
}


def _fail(message: str, code: int) -> NoReturn:
    print(f"swarmd: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except (JobValidationError, ConfigError, StateDirError, CliError, ListenError, TracingConfigError) as exc:
        _fail(str(exc), 2)
    except (DaemonAlreadyRunning, JobNotFound) as exc:
        _fail(str(exc), 1)
    except SwarmdError as exc:
        _fail(str(exc), 1)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
