"""What the Redis backend keeps of schedules: one hash per queue, ``{prefix}:q:<queue>:schedules``.

Field ``def:<name>``: the schedule's definition as the last daemon published it (JSON).
Field ``tick:<name>``: ``"<tick> <job id>"``, the last tick fired and its job, moved forward only
by `RECORD_TICK` (several daemons fire the same ticks; a slow one never moves it back).
Schedule names match the agent-name pattern, which has no ``:``, so the fields cannot collide.
"""

from __future__ import annotations

from typing import Final

import msgspec

from swarmd.schedules import Schedule, ScheduleState

#: KEYS[1]: the hash; ARGV: the field, the tick (Unix time), the job id.
RECORD_TICK: Final = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  local tick = tonumber(string.match(old, '^(%S+)'))
  if tick and tick >= tonumber(ARGV[2]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. ARGV[3])
return 1
"""


def states_from_hash(raw: dict[bytes, bytes]) -> list[ScheduleState]:
    """The schedules a ``HGETALL`` of the hash holds, by name; an unreadable field reads as unknown."""
    definitions: dict[str, Schedule | None] = {}
    ticks: dict[str, tuple[float, str]] = {}
    for field, value in raw.items():
        kind, _, name = field.decode(errors="replace").partition(":")
        if kind == "def":
            try:
                definitions[name] = Schedule.from_dict(msgspec.json.decode(value))
            except (msgspec.DecodeError, AttributeError, KeyError, TypeError, ValueError):
                definitions[name] = None
        elif kind == "tick":
            tick, _, job = value.decode(errors="replace").partition(" ")
            try:
                ticks[name] = (float(tick), job)
            except ValueError:
                continue
    states: list[ScheduleState] = []
    for name in sorted(set(definitions) | set(ticks)):
        last = ticks.get(name)
        states.append(
            ScheduleState(name, definitions.get(name), last[0] if last else None, (last[1] or None) if last else None)
        )
    return states
