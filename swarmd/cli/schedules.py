"""``swarmd schedule list``: each schedule daemons publish, with its next and last tick and last job."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from swarmd.cli.output import note, print_json
from swarmd.client import Client, ScheduleInfo

HEADER = ("NAME", "AGENT", "GID", "CRON", "TIMEZONE", "CATCH_UP", "NEXT TICK (UTC)", "LAST TICK (UTC)", "LAST JOB")


def when(tick: float | None) -> str:
    """A tick as UTC ISO 8601 to the second; "-" for none."""
    return "-" if tick is None else datetime.fromtimestamp(tick, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rows(infos: Sequence[ScheduleInfo]) -> list[tuple[str, ...]]:
    return [
        (
            info.name,
            info.agent or "-",
            info.gid or "-",
            info.cron or "-",
            info.timezone or "-",
            info.catch_up or "-",
            when(info.next_tick),
            when(info.last_tick),
            info.last_job or "-",
        )
        for info in infos
    ]


def print_schedules(infos: Sequence[ScheduleInfo], as_json: bool) -> None:
    if as_json:
        for info in infos:
            print_json(info.as_dict())
        return
    if not infos:
        note("no schedules: no daemon has published any to this queue")
        return
    table = [HEADER, *rows(infos)]
    widths = [max(len(row[column]) for row in table) for column in range(len(HEADER))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def cmd_schedule(args: argparse.Namespace, client: Callable[..., Client]) -> int:
    with client(args, read_only=True) as opened:
        print_schedules(opened.schedules(), args.json)
    return 0
