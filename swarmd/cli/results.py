"""`swarmd result`, `swarmd wait` and `submit --wait`: a job's (or a swarm's) results, waited for.

stdout carries the results: one line a job (``JOB_ID  OUTCOME  RESULT-JSON`` or ``... error:
Type: message``), or with ``--json`` one JSON array of results (`swarmd.JobResult` fields, the
``error`` an object with its ``traceback``). `swarmd result JOB_ID` of a job that succeeded
prints its result alone (JSON), for scripts. Exit status: 0 when every job succeeded, 1 when
any failed, was cancelled or dead-lettered, 124 when the time ran out (as timeout(1) says).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Final

from swarmd.cli.output import describe_error, print_details, print_json
from swarmd.client import Client, JobResult
from swarmd.errors import CliError, WaitTimeout

#: The exit status of a wait that ran out of time (what timeout(1) exits with).
EXIT_TIMEOUT: Final = 124


def wait_and_print(client: Client, job_ids: Sequence[str], timeout: float | None, as_json: bool) -> int:
    """Wait for the jobs, print their results in the order given; the exit status."""
    try:
        results = client.wait_many(list(job_ids), timeout)
    except WaitTimeout as exc:
        print(f"swarmd: error: {exc}", file=sys.stderr)
        return EXIT_TIMEOUT
    print_results(results, as_json)
    return 0 if all(result.ok for result in results) else 1


def print_results(results: Sequence[JobResult], as_json: bool) -> None:
    """Results, one a line (``--json``: one JSON array)."""
    if as_json:
        print_json([result.as_dict() for result in results])
        return
    for result in results:
        if result.ok:
            detail = "-" if result.result is None else _encode(result.result)
        else:
            detail = "error: " + describe_error(result.error or {})
        print(f"{result.job_id}  {result.outcome:<13} {detail}")


def _encode(value: object) -> str:
    import msgspec  # noqa: PLC0415 - only when a result is printed

    return msgspec.json.encode(value).decode()


def cmd_result(args: argparse.Namespace, client: Client) -> int:
    """`swarmd result JOB_ID [--wait] [--timeout S]`."""
    if args.timeout is not None and not args.wait:
        raise CliError("--timeout goes with --wait")
    try:
        result = client.wait(args.job_id, args.timeout if args.wait else 0.0)
    except WaitTimeout as exc:
        if args.wait:
            print(f"swarmd: error: {exc}", file=sys.stderr)
            return EXIT_TIMEOUT
        state = client.status(args.job_id).state
        print(f"swarmd: job {args.job_id} has not finished ({state}); --wait waits for it", file=sys.stderr)
        return 1
    if args.json:
        print_json(result.as_dict())
    elif result.ok:
        print(_encode(result.result))
    else:
        print(f"{result.job_id}  {result.outcome:<13} error: {describe_error(result.error or {})}")
        print_details(None, result.error)
    return 0 if result.ok else 1


def cmd_wait(args: argparse.Namespace, client: Client) -> int:
    """`swarmd wait JOB_ID... | --swarm ID [--timeout S]`."""
    if bool(args.job_ids) == (args.swarm is not None):
        raise CliError("wait needs JOB_IDs or --swarm SWARM_ID (not both)")
    if args.swarm is not None:
        try:
            results = client.wait_swarm(args.swarm, args.timeout)
        except WaitTimeout as exc:
            print(f"swarmd: error: {exc}", file=sys.stderr)
            return EXIT_TIMEOUT
        print_results(results, args.json)
        return 0 if all(result.ok for result in results) else 1
    return wait_and_print(client, args.job_ids, args.timeout, args.json)
