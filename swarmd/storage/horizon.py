"""The horizon of archived job ids: how long an archived id is still refused, in generations.

When ledger entries are archived, each job id is remembered (when it was made and a 64-bit hash
of it: `swarmd.ledger.sqlite.archived_id_key`) so that the job stays finished: its id is refused
at submit, and a late outcome of it (a lost lease) writes nothing. Remembered forever, that index
would grow with the job count (~28 bytes a job on SQLite); so each id is remembered for
``remember_for`` seconds (the ``archived_id_ttl`` setting) after it was archived, then forgotten.

Ids are kept in **generations** named by the hour at whose start they are forgotten
(`generation`: hours since the Unix epoch). An id archived at ``t`` goes into the first
generation boundary at or after ``t + remember_for``, rounded up to a multiple of the grain
(`grain_hours`: an eighth of the horizon, at least an hour), so that about `GENERATIONS` + 1
generations are live at once whatever the horizon, and an id is remembered for at least
``remember_for`` and at most ``remember_for`` + one grain + one hour. A generation is live while
``now < gen * 3600`` (`is_live`, `first_dead`), whoever asks: lookups only probe live
generations, so an id is accepted again after its horizon whether or not the expiry has run yet,
and the expiry (SQLite: a range delete on the primary key; Redis: the set's own EXPIREAT) is
pure housekeeping.

Why hours since the epoch: about 495,000 in 2026, a 3-byte integer in an SQLite record (up to
8,388,607: the year 2927), one byte more than a day number and fine enough for a horizon of
minutes; seconds would take 4 bytes (6 after 2038).
"""

from __future__ import annotations

import math
from typing import Final

from swarmd.config import Settings, archived_id_ttl_seconds

#: The table of ids archived under their hash alone (schema version 6, before ``archived_ids``
#: kept the order ids were made in): lookups probe it too until its generations are forgotten,
#: and the expiry drops it once it is empty.
HASHED_IDS_TABLE: Final = "archived_ids_hashed"
#: Seconds in one unit of a generation's number (an hour).
UNIT: Final = 3600
#: About how many generations a horizon is cut into (the lookups probe each live one).
GENERATIONS: Final = 8
#: The horizon of the default settings (``result_ttl``'s default, 7 days): what ids archived
#: before the horizon existed (migrated state) are given, counted from the migration.
DEFAULT_HORIZON: Final = archived_id_ttl_seconds(Settings())


def grain_hours(remember_for: float) -> int:
    """Hours between two generation boundaries for this horizon: an eighth of it, at least 1."""
    return max(1, math.ceil(remember_for / UNIT / GENERATIONS))


def generation(archived_at: float, remember_for: float) -> int:
    """The generation of an id archived at Unix time ``archived_at`` and remembered for
    ``remember_for`` seconds: the hour (since the epoch) at whose start it is forgotten, the
    first multiple of the grain at or after ``archived_at + remember_for``."""
    if not remember_for > 0:
        raise ValueError(f"an archived id must be remembered for some time, not {remember_for!r} s")
    grain = grain_hours(remember_for)
    hours = math.ceil((archived_at + remember_for) / UNIT)
    return -(-hours // grain) * grain


def first_dead(now: float) -> int:
    """The newest generation that is no longer live at Unix time ``now``: generations up to
    and including it are forgotten; those above it are live."""
    return math.floor(now / UNIT)


def is_live(gen: int, now: float) -> bool:
    """Whether generation ``gen`` is still remembered at Unix time ``now``."""
    return gen > first_dead(now)


def expires_at(gen: int) -> int:
    """The Unix time at which generation ``gen`` is forgotten (Redis: the set's EXPIREAT)."""
    return gen * UNIT
