"""The `swarmd` command line's grammar: every command, option and argument, with its help and
its default, and the argument types that refuse bad input before any command runs (exit 2)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any, Final

from swarmd.config import Settings
from swarmd.errors import ArchiveError, CliError
from swarmd.ledger.chain import Anchor
from swarmd.model import ID_PATTERN
from swarmd.version import __version__

_DURATION: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_ID: Final = re.compile(ID_PATTERN)
#: Most jobs one `submit --count` writes (they go in one transaction, built in memory first).
MAX_SUBMIT_COUNT: Final = 100_000
#: Largest --limit / -n (SQLite integers are 64-bit; anything near that is a typo anyway).
MAX_LIMIT: Final = 1_000_000_000
#: States a bulk `cancel --state` may name (a dead letter is already over).
CANCELLABLE_STATES: Final = ("ready", "delayed", "leased")


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``12h``, ``7d``, ``2w`` → seconds."""
    match = _DURATION.match(text)
    if not match:
        raise CliError(f"--older-than: {text!r} is not a duration like 90s, 15m, 12h or 7d")
    return float(match.group(1)) * _UNITS[match.group(2)]


def anchor(text: str) -> Anchor:
    """argparse type of ``--anchor INDEX:HASH``."""
    try:
        return Anchor.parse(text)
    except ArchiveError as exc:
        raise argparse.ArgumentTypeError(exc.reason) from None


def index(text: str) -> int:
    """argparse type of a ledger index: a whole number, 0 or more."""
    if not text.isdigit() or len(text) > 18:
        raise argparse.ArgumentTypeError(f"{text!r} is not a ledger index (a whole number, 0 or more)")
    return int(text)


def job_id(text: str) -> str:
    """argparse type of a JOB_ID / SWARM_ID: an id swarmd could have made, or exit 2 naming
    the argument (ids go into SQL and Redis keys as UTF-8: argv may hold undecodable bytes)."""
    if not _ID.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a job id (letters, digits, '_.:-', at most 64)")
    return text


def limit(text: str) -> int:
    """argparse type of --limit and -n: an integer in [0, MAX_LIMIT]."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"{value} is not in [0, {MAX_LIMIT}]")
    return value


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default after its help, except where there is none to show (an
    unset option whose default comes from the config, a flag that is off unless given)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The ``swarmd`` parser: one subcommand per command (``ledger`` and ``dlq`` have their own)."""
    defaults = Settings()
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", help="state directory (default: $STATE_DIRECTORY or ~/.local/state/swarmd)")
    common.add_argument("--config", type=Path, help="TOML config file (default: /etc/swarmd/swarmd.toml if present)")
    common.add_argument("--backend", choices=["sqlite", "redis"], help="queue backend (default: sqlite)")
    common.add_argument("--redis-url", help=f"redis://HOST:PORT/DB for --backend redis (default: {defaults.redis_url})")
    common.add_argument("--redis-prefix", help=f"key prefix on Redis (default: {defaults.redis_prefix})")
    common.add_argument("--socket", help="the daemon's API socket, for producers who are not its user ($SWARMD_SOCKET)")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON")
    sub: dict[str, Any] = {"formatter_class": HelpFormatter}

    parser = argparse.ArgumentParser(
        prog="swarmd", description="Run swarms of agents, durably, in plain view.", formatter_class=HelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"swarmd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", parents=[common], help="run the daemon", **sub)
    serve.add_argument(
        "--metrics-listen", help=f"HOST:PORT for /metrics, /healthz, /readyz (default: {defaults.metrics_listen})"
    )
    serve.add_argument(
        "--allow-remote-metrics",
        action="store_true",
        default=None,
        help="allow --metrics-listen on a non-loopback address",
    )
    serve.add_argument("--agents", nargs="+", metavar="MODULE", help="modules whose @agent handlers to load")
    serve.add_argument("--agents-path", nargs="+", metavar="DIR", help="directories searched first for those modules")
    serve.add_argument(
        "--max-concurrent", type=int, help=f"most handlers running at once (default: {defaults.max_concurrent})"
    )
    serve.add_argument(
        "--workers",
        metavar="N|auto",
        help=f"worker processes sharing the queue; auto: one per usable CPU (default: {defaults.workers})",
    )
    serve.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help=f"least severe log events written (default: {defaults.log_level})",
    )
    serve.add_argument(
        "--grace-seconds",
        type=float,
        help=f"drain grace period after SIGTERM, in seconds (default: {defaults.grace_seconds:g})",
    )
    serve.add_argument(
        "--allow-volatile-redis",
        action="store_true",
        default=None,
        help="report ready on a Redis without AOF persistence",
    )

    submit = commands.add_parser("submit", parents=[common, as_json], help="submit jobs", **sub)
    submit.add_argument("--agent", required=True, help="the agent that runs the job")
    submit.add_argument("--gid", required=True, help="the identity the agent speaks for")
    payload = submit.add_mutually_exclusive_group()
    payload.add_argument("--payload", help="JSON payload")
    payload.add_argument("--payload-file", help="file holding the JSON payload ('-': standard input)")
    submit.add_argument(
        "--count", type=int, default=1, help=f"submit N jobs, in one transaction (1..{MAX_SUBMIT_COUNT})"
    )
    submit.add_argument("--swarm", action="store_true", help="the N jobs form one swarm (its id goes to stderr)")
    submit.add_argument("--fail-fast", action="store_true", help="the swarm's first permanent failure cancels the rest")
    submit.add_argument(
        "--then",
        metavar="AGENT",
        help="with --swarm: a follow-up job for AGENT, run once the swarm's last member ended",
    )
    submit.add_argument("--then-gid", metavar="GID", help="the follow-up's identity (default: --gid)")
    submit.add_argument("--then-payload", metavar="JSON", help="the follow-up's JSON payload")
    submit.add_argument(
        "--then-when",
        choices=["always", "all_succeeded"],
        default="always",
        help="run the follow-up always (default), or only if every member succeeded (else it is recorded skipped)",
    )
    submit.add_argument("--priority", type=int, default=0, help="higher runs first (-100..100)")
    submit.add_argument("--delay", type=float, default=0.0, help="seconds before the job may start")
    submit.add_argument("--timeout", type=float, help="seconds the handler may run (default: the daemon's)")
    submit.add_argument("--max-attempts", type=int, help="attempts before dead-lettering (default: the daemon's)")
    submit.add_argument("--idempotency-key", help="a second submit with this key returns the first job's id")
    submit.add_argument(
        "--wait",
        action="store_true",
        help="wait for the jobs, print their results (exit 1: one failed, 124: time out)",
    )
    submit.add_argument("--wait-timeout", type=float, metavar="S", help="with --wait: give up after S seconds")

    result = commands.add_parser("result", parents=[common, as_json], help="a finished job's result or error", **sub)
    result.add_argument("job_id", type=job_id, help="the job")
    result.add_argument("--wait", action="store_true", help="wait for the job to finish (exit 124: time out)")
    result.add_argument("--timeout", type=float, metavar="S", help="with --wait: give up after S seconds")

    wait = commands.add_parser("wait", parents=[common, as_json], help="wait for jobs or a swarm, print results", **sub)
    wait.add_argument("job_ids", nargs="*", type=job_id, metavar="JOB_ID", help="the jobs to wait for")
    wait.add_argument("--swarm", metavar="SWARM_ID", type=job_id, help="wait for every member of this swarm")
    wait.add_argument("--timeout", type=float, metavar="S", help="give up after S seconds (exit 124)")

    status = commands.add_parser("status", parents=[common, as_json], help="where a job (or a swarm) is", **sub)
    status.add_argument("job_id", nargs="?", type=job_id, help="the job to show")
    status.add_argument("--swarm", metavar="SWARM_ID", type=job_id, help="show every member of this swarm instead")

    jobs = commands.add_parser("jobs", parents=[common, as_json], help="list queued jobs", **sub)
    jobs.add_argument("--state", choices=["ready", "delayed", "leased", "dead"], help="only jobs in this state")
    jobs.add_argument("--agent", help="only jobs for this agent")
    jobs.add_argument("--gid", help="only jobs speaking for this identity")
    jobs.add_argument("--swarm", metavar="SWARM_ID", type=job_id, help="only members of this swarm")
    jobs.add_argument("--limit", type=limit, default=100, help="most jobs listed (how many more: on stderr)")

    ledger = commands.add_parser("ledger", help="read and verify the ledger", **sub)
    ledger_commands = ledger.add_subparsers(dest="ledger_command", required=True, metavar="SUBCOMMAND")
    tail = ledger_commands.add_parser("tail", parents=[common, as_json], help="the last entries", **sub)
    tail.add_argument("-n", type=limit, default=10, help="how many entries")
    export = ledger_commands.add_parser("export", parents=[common], help="every entry as a JSON line", **sub)
    export.add_argument("--archive", type=Path, metavar="DIR", help="start with the entries archived in DIR")
    verify = ledger_commands.add_parser(
        "verify", parents=[common], help="prove the chain has no gap, duplicate or edit", **sub
    )
    verify.add_argument(
        "--archive", type=Path, metavar="DIR", help="verify DIR's segments and the live store as one chain"
    )
    verify.add_argument(
        "--anchor",
        action="append",
        type=anchor,
        default=[],
        metavar="INDEX:HASH",
        help="a logged ledger_checkpoint the chain must still pass through (repeatable)",
    )
    ledger_commands.add_parser(
        "checkpoint", parents=[common], help="the current checkpoint: INDEX:HASH of the last entry", **sub
    )
    archive = ledger_commands.add_parser(
        "archive", parents=[common], help="move old entries to compressed segments, then forget them", **sub
    )
    which = archive.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--older-than", type=parse_duration, metavar="DURATION", help="entries finished longer ago: 30d, 12h"
    )
    which.add_argument("--before", type=index, metavar="INDEX", help="entries with an index below INDEX")
    archive.add_argument(
        "--to", type=Path, required=True, metavar="DIR", help="the archive directory (made if missing)"
    )

    dlq = commands.add_parser("dlq", help="dead letters", **sub)
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="SUBCOMMAND")
    dlq_list = dlq_commands.add_parser("list", parents=[common, as_json], help="list dead letters", **sub)
    dlq_list.add_argument("--limit", type=limit, default=100, help="most dead letters listed")
    requeue = dlq_commands.add_parser("requeue", parents=[common, as_json], help="run dead letters again", **sub)
    requeue.add_argument("job_id", nargs="?", type=job_id, help="the dead letter to run again")
    requeue.add_argument("--all", action="store_true", help="run every dead letter again")
    purge = dlq_commands.add_parser("purge", parents=[common], help="delete old dead letters", **sub)
    purge.add_argument(
        "--older-than", required=True, metavar="DURATION", help="delete those dead longer than this: 7d, 12h, 30m"
    )

    cancel = commands.add_parser(
        "cancel", parents=[common, as_json], help="cancel a job, a swarm, or the jobs that match", **sub
    )
    cancel.add_argument("job_id", nargs="?", type=job_id, help="the job to cancel")
    cancel.add_argument("--swarm", metavar="SWARM_ID", type=job_id, help="cancel every member of this swarm")
    cancel.add_argument("--agent", help="cancel the jobs for this agent (with --yes)")
    cancel.add_argument("--gid", help="cancel the jobs speaking for this identity (with --yes)")
    cancel.add_argument(
        "--state", choices=CANCELLABLE_STATES, help="cancel only the jobs in this state (with --yes; leased: running)"
    )
    cancel.add_argument("--all", action="store_true", help="cancel every queued and running job (with --yes)")
    cancel.add_argument(
        "--yes",
        action="store_true",
        help="do cancel what --agent, --gid, --state or --all select (without it: a dry run)",
    )

    schedule = commands.add_parser("schedule", help="the schedules daemons fire", **sub)
    schedule_commands = schedule.add_subparsers(dest="schedule_command", required=True, metavar="SUBCOMMAND")
    schedule_commands.add_parser(
        "list", parents=[common, as_json], help="each schedule with its next and last tick and last job", **sub
    )

    commands.add_parser("demo", help="start a daemon in a temporary directory, run a 50-agent swarm, report", **sub)
    bench = commands.add_parser("bench", parents=[as_json], help="measure swarmd against the bare-asyncio floor", **sub)
    bench.add_argument(
        "scenario", help="swarm, e2e, throughput, scale, instrumentation, redis-throughput, redis-e2e, soak, or all"
    )
    bench.add_argument("--agents", type=int, nargs="+", help="swarm sizes (swarm scenario)")
    bench.add_argument("--jobs", type=int, help="jobs (throughput, scale, instrumentation and soak scenarios)")
    bench.add_argument(
        "--repeat", type=int, help="repetitions after the warm-up (soak: paired rounds of retention on and off)"
    )
    return parser
