"""The numbered migrations of a Redis prefix: how keys written by an older swarmd move forward.

A prefix records the version of its key layout in ``{prefix}:schema_version``. Version 1 is the
layout of `swarmd.queue.redis.backend`'s docstring; a prefix without the key is at version 1
(fresh, or written before the version was recorded), and its first open writes it. Every later
change to a key or to what one holds appends one `RedisMigration` to `MIGRATIONS`, numbered one
above the last, and is never edited once released.

All the steps a prefix lacks run in ONE Lua script (`upgrade_script`), so no other client sees
a half-migrated prefix and two daemons that open it at once migrate it once: the second finds
the new version. The script records each step's version right after the step. Redis cannot
roll a script back, so a step checks everything it needs before its first write and raises
(``error(...)``) to refuse: the prefix then stays at the previous version, untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import structlog
from redis.asyncio import Redis

from swarmd.errors import StateVersionError
from swarmd.storage import horizon

log = structlog.get_logger("swarmd.redis")

#: The key layout of the first release: what a prefix without a recorded version is at.
BASE_VERSION: Final = 1
#: The key (after ``{prefix}:``) that holds the prefix's layout version.
VERSION_KEY: Final = "schema_version"


@dataclass(frozen=True, slots=True)
class RedisMigration:
    """One step forward: ``lua`` turns a prefix at ``to_version - 1`` into ``to_version``.

    ``lua`` is the body of a Lua function run inside the upgrade script, where ``P`` is the
    prefix (``{prefix}:``); it finds a queue's keys under ``P .. 'q:'``. ``description`` says
    what the step changes, for the log and for readers.
    """

    to_version: int
    description: str
    lua: str


#: Every migration after `BASE_VERSION`, in order.
MIGRATIONS: tuple[RedisMigration, ...] = (
    # No key changes: a stored job may now carry ``submitted_by`` (the API socket's peer), which
    # an older swarmd's strict decoder would dead-letter as malformed; the version makes it
    # refuse the prefix instead.
    RedisMigration(2, "jobs may carry submitted_by (the API socket's peer)", "return"),
    RedisMigration(
        3,
        "swarms are counted (swarmc:<id>); jobs may carry parent_id, follows and follow_when",
        "return",
    ),
    # No key changes: the ledger list may now start past index 0 (``ledger:base``, after an
    # archive); an older swarmd would take list positions for indices, so it must refuse.
    RedisMigration(4, "the ledger list may start at ledger:base, after its archived entries", "return"),
    # Archived job ids are remembered for a horizon: the one set ``ledger:archived`` becomes
    # the generation sets ``ledger:archived:<gen>`` (EXPIREAT gen * 3600) named in the zset
    # ``ledger:archived:gens`` (swarmd.storage.horizon). The ids archived before the upgrade
    # are renamed (O(1)) into the generation of the default horizon, counted from the upgrade;
    # an older swarmd would look for them in the old set, so it must refuse.
    RedisMigration(
        5,
        "archived job ids move to ledger:archived:<gen>, forgotten after archived_id_ttl",
        f"""
if redis.call('EXISTS', P .. 'ledger:archived') == 0 then return end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local grain = {horizon.grain_hours(horizon.DEFAULT_HORIZON)}
local gen = math.ceil(math.ceil((now + {horizon.DEFAULT_HORIZON!r}) / {horizon.UNIT}) / grain) * grain
local key = P .. 'ledger:archived:' .. gen
if redis.call('EXISTS', key) == 1 then
  redis.call('SUNIONSTORE', key, key, P .. 'ledger:archived')
  redis.call('DEL', P .. 'ledger:archived')
else
  redis.call('RENAME', P .. 'ledger:archived', key)
end
redis.call('EXPIREAT', key, gen * {horizon.UNIT})
redis.call('ZADD', P .. 'ledger:archived:gens', gen, gen)
""",
    ),
)


def known_version() -> int:
    """The newest layout version this swarmd knows, the one every prefix it opens ends at."""
    return MIGRATIONS[-1].to_version if MIGRATIONS else BASE_VERSION


def pending(found: int) -> Sequence[RedisMigration]:
    """The steps that bring a prefix at version ``found`` to `known_version`, in order."""
    for number, step in enumerate(MIGRATIONS, start=BASE_VERSION + 1):
        if step.to_version != number:
            raise RuntimeError(f"migration {step.description!r} is numbered {step.to_version}, expected {number}")
    return [step for step in MIGRATIONS if step.to_version > found]


def upgrade_script() -> str:
    """The Lua script that checks a prefix's version and runs the steps it lacks, atomically.

    ``KEYS[1]`` is the version key, ``ARGV[1]`` the prefix ``P``. It returns ``{'newer',
    found}`` and writes nothing for a prefix newer than this swarmd knows, else ``{'ok',
    found, now}`` (``found`` 0: the key was missing, and is written now). An up-to-date prefix
    is not written; a step that raises leaves the prefix as the previous step left it.
    """
    steps = pending(BASE_VERSION)
    functions = "".join(f"steps[{step.to_version}] = function()\n{step.lua}\nend\n" for step in steps)
    return f"""
local P = ARGV[1]
local known = {known_version()}
local recorded = redis.call('GET', KEYS[1])
local found = tonumber(recorded or '{BASE_VERSION}')
if found > known then return {{'newer', found}} end
if recorded and found == known then return {{'ok', found, found}} end
local steps = {{}}
{functions}
for version = found + 1, known do
    steps[version]()
    redis.call('SET', KEYS[1], version)
end
if not recorded and found == known then redis.call('SET', KEYS[1], found) end
return {{'ok', tonumber(recorded or '0'), known}}
"""


async def open_prefix(client: Redis, p: str, where: str) -> None:
    """Check the version of the prefix ``p`` (``{prefix}:``) and bring it forward if older.

    Raises `StateVersionError` (nothing written) for a prefix newer than this swarmd knows.
    An up-to-date prefix costs one GET and no write; anything else is one `upgrade_script`
    call. ``where`` names the server and prefix in messages.
    """
    key, known = p + VERSION_KEY, known_version()
    recorded: Any = await client.get(key)
    if recorded is not None and int(recorded) == known:
        return
    if recorded is not None and int(recorded) > known:
        raise StateVersionError(where, int(recorded), known)
    outcome, found, *now = await client.register_script(upgrade_script())(keys=[key], args=[p])
    if outcome == b"newer":  # another daemon, newer than this one, got there first
        raise StateVersionError(where, int(found), known)
    if found and int(found) < int(now[0]):
        log.info(
            "state migrated",
            where=where,
            from_version=int(found),
            to_version=int(now[0]),
            steps=[f"{step.to_version}: {step.description}" for step in pending(int(found))],
        )
