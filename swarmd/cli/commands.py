"""The `swarmd` command line: one function per command, on the public `Client` only.

Exit codes: 0 done; 1 the thing asked about is not well (job not found, ledger broken, a bulk
cancel not confirmed, a job waited for failed); 2 bad input (a malformed job, an unknown agent, a
bad config, an unusable state directory); 124 a wait ran out of time; 141 stdout was closed
early (``swarmd ledger export | head -1``), quietly.
Errors print one line, ``swarmd: error: ...``, that says what was wrong and where.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from swarmd.cli import results
from swarmd.cli.output import (
    Progress,
    note,
    plural,
    print_details,
    print_family,
    print_infos,
    print_json,
    swarm_summary,
    warn,
)
from swarmd.cli.parser import MAX_SUBMIT_COUNT, build_parser, parse_duration
from swarmd.cli.results import wait_and_print
from swarmd.cli.schedules import cmd_schedule
from swarmd.client import Client
from swarmd.config import Settings, load_settings, resolve_state_dir
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
from swarmd.ledger.chain import Anchor, tampering_between
from swarmd.ledger.records import export_row
from swarmd.model import MAX_PAYLOAD_BYTES, JobState, decode_payload
from swarmd.registry import build_registry

#: The exit status of a command whose stdout was closed early (128 + SIGPIPE, as a shell reports).
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


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


def _queue_name(settings: Settings) -> str:
    """Where the queue is, for messages: the state directory, or the Redis and its prefix."""
    if settings.backend == "redis":  # the server without its credentials
        url = urlsplit(settings.redis_url)
        server = f"unix:{url.path}" if url.scheme == "unix" else f"{url.hostname}:{url.port or 6379}{url.path}"
        return f"the queue on Redis {server} (prefix {settings.redis_prefix})"
    return str(resolve_state_dir(settings.state_dir))


def _ledger_archive(args: argparse.Namespace) -> int:
    """``swarmd ledger archive``: segments first, then the entries forgotten, chunk by chunk."""
    finished_before = None if args.older_than is None else time.time() - args.older_than
    with _client(args) as client:
        run = client.archive_ledger(args.to, before=args.before, finished_before=finished_before)
    print(run.summary())
    return 0


def _verify_anchors(client: Client, anchors: list[Anchor], archive: Path | None) -> int:
    """``ledger verify --anchor``: each anchor holds or fails; where the tampering lies."""
    report, findings = client.check_anchors(anchors, archive=archive)
    print(report.summary())
    for finding in findings:
        print(finding.summary())
    where = tampering_between(findings)
    if where is not None:
        print(where)
    return 0 if report.ok and all(finding.holds for finding in findings) else 1


# -- commands ------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    from swarmd.runtime.daemon import serve  # noqa: PLC0415 - keep the other commands light

    flags = {
        "metrics_listen": args.metrics_listen,
        "allow_remote_metrics": args.allow_remote_metrics,
        "agents": args.agents,
        "agents_path": args.agents_path,
        "max_concurrent": args.max_concurrent,
        "workers": args.workers,
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
    known = build_registry(settings.agents, agents_path=settings.agents_path).names()
    return set(known) | set(client.published_agents() or ())


def _job_spec(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """The job `submit` asks for (``--count`` copies of it), its payload read and checked."""
    if not 1 <= args.count <= MAX_SUBMIT_COUNT:
        raise CliError(f"--count must be between 1 and {MAX_SUBMIT_COUNT}")
    if args.fail_fast and not args.swarm:
        raise CliError("--fail-fast needs --swarm")
    if args.idempotency_key is not None and args.count > 1:
        raise CliError("--idempotency-key names one job; it cannot go with --count")
    if args.then is None and (args.then_gid is not None or args.then_payload is not None):
        raise CliError("--then-gid and --then-payload describe a follow-up: they need --then AGENT")
    if args.then is not None and not args.swarm:
        raise CliError("--then needs --swarm (a follow-up runs when a swarm ends)")
    spec: dict[str, Any] = {
        "agent": args.agent,
        "gid": args.gid,
        "payload": _read_payload(args, min(settings.max_payload_bytes, MAX_PAYLOAD_BYTES)),
        "priority": args.priority,
        "delay": args.delay,
    }
    for key in ("timeout", "max_attempts", "idempotency_key"):
        if getattr(args, key) is not None:
            spec[key] = getattr(args, key)
    return spec


def _then_spec(args: argparse.Namespace, settings: Settings) -> dict[str, Any] | None:
    """The follow-up ``--then`` asks for (None: none)."""
    if args.then is None:
        return None
    spec: dict[str, Any] = {"agent": args.then, "gid": args.then_gid or args.gid}
    if args.then_payload is not None:
        try:
            spec["payload"] = decode_payload(args.then_payload, max_bytes=settings.max_payload_bytes)
        except JobValidationError as exc:
            raise JobValidationError("then.payload", exc.reason) from None
    return spec


def _absent(path: Path) -> bool:
    """``path`` does not exist (one this user cannot even look at is not taken for absent)."""
    try:
        return not path.exists()
    except OSError:
        return False


def cmd_submit(args: argparse.Namespace) -> int:
    settings = _settings(args)
    spec = _job_spec(args, settings)
    # Said once the submit is done: a refused one prints its error alone.
    new_state = settings.backend == "sqlite" and _absent(resolve_state_dir(settings.state_dir))
    started = time.monotonic()
    with _client(args, settings) as client:
        client.known_agents = _known_agents(settings, client)
        with Progress(f"submitting {plural(args.count, 'job')}") as progress:
            if args.count > 1:
                progress.advance(0)  # one transaction: the counter says it is under way
            result = client.submit_many(
                [spec] * args.count,
                swarm=args.swarm,
                fail_fast=args.fail_fast,
                then=_then_spec(args, settings),
                then_when=args.then_when,
            )
        serving = client.daemon_serving()
        if args.wait:  # the results, not the ids, are the data
            if not serving:
                warn(f"no daemon is serving {_queue_name(settings)}; waiting for one to start")
            return wait_and_print(client, result.job_ids, args.wait_timeout, args.json)
    elapsed = time.monotonic() - started
    if new_state:
        note(f"creating a new state in {_queue_name(settings)}")
    if args.json:
        shown: dict[str, Any] = {"job_ids": result.job_ids, "swarm_id": result.swarm_id}
        if result.follow_up is not None:
            shown["follow_up"] = result.follow_up
        print_json(shown)
    else:  # stdout: one job id a line, for scripts; the swarm id, for people, on stderr
        sys.stdout.write("".join(f"{job_id}\n" for job_id in result.job_ids))
        sys.stdout.flush()
        if result.swarm_id is not None:
            print(f"swarm: {result.swarm_id}", file=sys.stderr)
        if result.follow_up is not None:
            print(f"follow-up: {result.follow_up}", file=sys.stderr)
    if args.count > 1 and sys.stderr.isatty():
        swarm = f" (swarm {result.swarm_id})" if result.swarm_id is not None else ""
        print(f"submitted {plural(len(result.job_ids), 'job')}{swarm} in {elapsed:.1f} s", file=sys.stderr)
    if not serving:
        kept = "the job is kept and runs" if len(result.job_ids) == 1 else "the jobs are kept and run"
        warn(f"no daemon is serving {_queue_name(settings)}; {kept} when one starts")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    if (args.job_id is None) == (args.swarm is None):
        raise CliError("status needs a JOB_ID or --swarm SWARM_ID (not both)")
    with _client(args, read_only=True) as client:
        if args.swarm is not None:
            members = client.swarm_status(args.swarm)
            if not args.json:
                progress = client.swarm_progress(args.swarm)
                follow_up = None
                if progress is not None and progress.follow_up is not None:
                    follow_up = client.status(progress.follow_up)
                print(swarm_summary(args.swarm, members, follow_up))
            print_infos(members, args.json)
        else:
            info = client.status(args.job_id)
            if args.json:
                print_json(info.as_dict())
            else:
                print_infos([info], False)
                print_family(info)
                print_details(info.result, info.error)
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    state = JobState(args.state) if args.state is not None else None
    where: dict[str, Any] = {"agent": args.agent, "gid": args.gid, "swarm_id": args.swarm}
    with _client(args, read_only=True) as client:
        infos = client.list_jobs(state, args.limit, **where)
        more = client.count_jobs(state, **where) - len(infos) if len(infos) >= args.limit else 0
    print_infos(infos, args.json)
    _say_more(more)
    return 0


def _say_more(more: int) -> None:
    """After a listing cut by --limit: how many it left out, on stderr."""
    if more > 0:
        sys.stdout.flush()
        print(f"… and {more} more (use --limit)", file=sys.stderr)


def _ledger_length(client: Client, *, archived: bool = False) -> int:
    """Entries in the live ledger (those after its anchor); with ``archived``, from index 0."""
    last = client.ledger_tail(1)
    anchor = client.ledger_anchor()
    end = last[0].index + 1 if last else (anchor.index + 1 if anchor else 0)
    return end if archived or anchor is None else end - anchor.index - 1


def cmd_ledger(args: argparse.Namespace) -> int:
    if args.ledger_command == "archive":
        return _ledger_archive(args)
    with _client(args, read_only=True) as client:
        if args.ledger_command == "verify":
            if args.anchor:
                return _verify_anchors(client, args.anchor, args.archive)
            with Progress("verifying entries", _ledger_length(client)) as progress:
                report = client.verify(progress.advance if progress.enabled else None, archive=args.archive)
            print(report.summary())
            return 0 if report.ok else 1
        if args.ledger_command == "export":
            entries = client.iter_ledger() if args.archive is None else client.iter_ledger_with_archive(args.archive)
            with Progress("exporting entries", _ledger_length(client, archived=args.archive is not None)) as progress:
                for entry in progress.track(entries):
                    print_json(export_row(entry))
            return 0
        if args.ledger_command == "checkpoint":
            last = client.ledger_tail(1)
            anchor = client.ledger_anchor()
            if not last and anchor is None:
                print("ledger empty: no checkpoint yet", file=sys.stderr)
                return 1
            current = Anchor(last[-1].index, last[-1].hash) if last else anchor
            print(f"ledger_checkpoint index={current.index} hash={current.hash}" if current else "")
            return 0
        for entry in client.ledger_tail(args.n):
            row = export_row(entry)
            if args.json:
                print_json(row)
            else:
                print(
                    f"{row['index']:>8}  {row.get('outcome', '-'):<13} job={row['job_id']} gid={row['gid']} "
                    f"agent={row.get('agent', '-')} attempt={row.get('attempt', '-')} hash={row['hash'][:16]}"
                )
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
    if args.dlq_command == "requeue" and (args.job_id is None) == (not args.all):
        raise CliError("dlq requeue needs a JOB_ID or --all (not both)")
    older_than = parse_duration(args.older_than) if args.dlq_command == "purge" else 0.0
    with _client(args, read_only=args.dlq_command == "list") as client:
        if args.dlq_command == "list":
            letters = client.dead_letters(args.limit)
            more = client.count_jobs(JobState.DEAD) - len(letters) if len(letters) >= args.limit else 0
            print_infos(letters, args.json)
            _say_more(more)
        elif args.dlq_command == "requeue":
            pairs = client.requeue(args.job_id, all_dead=args.all)
            if args.json:
                print_json([{"dead_job_id": old, "job_id": new} for old, new in pairs])
            else:
                for old, new in pairs:
                    print(f"{old} -> {new}")
        else:
            purged = client.purge_dead(older_than)
            print(f"purged {plural(purged, 'dead letter')}")
    return 0


def _bulk_selection(args: argparse.Namespace) -> dict[str, str] | None:
    """The filters of a bulk cancel, by option name (None: not a bulk cancel; empty: --all)."""
    where = {key: getattr(args, key) for key in ("state", "agent", "gid") if getattr(args, key) is not None}
    if args.all and where:
        raise CliError("cancel --all selects every job: it cannot go with --agent, --gid or --state")
    return where if where or args.all else None


def _split(where: dict[str, str]) -> tuple[JobState | None, dict[str, str | None]]:
    """A bulk selection as `Client.count_jobs` and `Client.cancel_matching` take it."""
    state = JobState(where["state"]) if "state" in where else None
    return state, {"agent": where.get("agent"), "gid": where.get("gid")}


def cmd_cancel(args: argparse.Namespace) -> int:
    where = _bulk_selection(args)
    if sum((args.job_id is not None, args.swarm is not None, where is not None)) != 1:
        raise CliError("cancel needs one of: a JOB_ID, --swarm SWARM_ID, or --agent/--gid/--state/--all (with --yes)")
    if args.yes and where is None:
        raise CliError("--yes confirms a cancel by --agent, --gid, --state or --all")
    if where is not None and not args.yes:
        state, filters = _split(where)
        with _client(args, read_only=True) as client:
            count = client.count_jobs(state, **filters)
        selected = " ".join(f"--{key} {value}" for key, value in where.items()) or "--all"
        print(
            f"would cancel {plural(count, 'queued or running job')} ({selected}); "
            "nothing cancelled: add --yes to cancel them",
            file=sys.stderr,
        )
        return 1
    with _client(args) as client:
        if where is not None:
            state, filters = _split(where)
            affected = client.cancel_matching(state, **filters)
        else:
            affected = client.cancel(args.job_id, swarm_id=args.swarm)
    if args.json:
        print_json({"cancelled": affected})
    elif affected:
        print("\n".join(affected))
    elif where is not None:
        print("nothing to cancel: no queued or running job matches", file=sys.stderr)
    else:
        print("nothing to cancel: already finished", file=sys.stderr)
    return 0


def cmd_result(args: argparse.Namespace) -> int:
    with _client(args, read_only=True) as client:
        return results.cmd_result(args, client)


def cmd_wait(args: argparse.Namespace) -> int:
    with _client(args, read_only=True) as client:
        return results.cmd_wait(args, client)


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
    "result": cmd_result,
    "wait": cmd_wait,
    "jobs": cmd_jobs,
    "ledger": cmd_ledger,
    "dlq": cmd_dlq,
    "cancel": cmd_cancel,
    "demo": cmd_demo,
    "bench": cmd_bench,
    "schedule": lambda args: cmd_schedule(args, _client),
}


def _fail(message: str, code: int) -> NoReturn:
    print(f"swarmd: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = _COMMANDS[args.command](args)
        sys.stdout.flush()  # inside the try: a closed pipe shows here, not at exit
    except BrokenPipeError:
        return _stdout_closed()
    except (JobValidationError, ConfigError, StateDirError, CliError, ListenError, TracingConfigError) as exc:
        _fail(str(exc), 2)
    except (DaemonAlreadyRunning, JobNotFound) as exc:
        _fail(str(exc), 1)
    except SwarmdError as exc:
        _fail(str(exc), 1)
    except KeyboardInterrupt:
        return 130
    return code


def _stdout_closed() -> int:
    """The reader of stdout went away (``| head -1``): stop quietly, as `cat` does. Python's
    recipe: point stdout at /dev/null so that the flush at exit cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
