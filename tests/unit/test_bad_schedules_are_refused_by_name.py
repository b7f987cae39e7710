"""A bad schedule is refused with an error naming it and its key, before anything is written:
a malformed cron expression, an unknown time zone, a missing gid, an unknown key or catch_up,
two schedules of one name, in a ``[[schedule]]`` table or in ``@agent(schedule=...)``; and at
the daemon's start, a table naming an agent nobody registered (swarmd.runtime.scheduler)."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarmd.config import configured_schedules, load_settings
from swarmd.errors import ConfigError
from swarmd.registry import Registry, agent
from swarmd.runtime.scheduler import resolve_schedules
from swarmd.schedules import CatchUp

GOOD = 'agent = "echo"\ngid = "GID-1"\ncron = "*/5 * * * *"\n'


def config(tmp_path: Path, *tables: str) -> Path:
    path = tmp_path / "swarmd.toml"
    path.write_text("".join(f"[[schedule]]\n{table}\n" for table in tables))
    return path


@pytest.mark.parametrize(
    ("table", "key", "words"),
    [
        ('agent = "echo"\ngid = "GID-1"\ncron = "*/5 * * *"\n', "schedule[1].cron", "has 4 fields"),
        ('agent = "echo"\ngid = "GID-1"\ncron = "61 * * * *"\n', "schedule[1].cron", "not a valid cron expression"),
        ('agent = "echo"\ngid = "GID-1"\ncron = "0 0 30 2 *"\n', "schedule[1].cron", "not a valid cron expression"),
        (GOOD + 'timezone = "Mars/Olympus_Mons"\n', "schedule[1].timezone", "unknown time zone"),
        (GOOD + 'timezone = "../../etc/passwd"\n', "schedule[1].timezone", "not an IANA time zone"),
        ('agent = "echo"\ncron = "*/5 * * * *"\n', "schedule[1].gid", "missing"),
        ('gid = "GID-1"\ncron = "*/5 * * * *"\n', "schedule[1].agent", "missing"),
        (GOOD + 'catch_up = "some"\n', "schedule[1].catch_up", "Invalid enum value 'some'"),
        (GOOD + "every = 5\n", "schedule[1].every", "unknown key"),
        (GOOD + 'gid = "two gids"\n', "$", "not valid TOML"),
        ('agent = "echo"\ngid = "no spaces"\ncron = "* * * * *"\n', "schedule[1].gid", "does not match"),
        (GOOD, "schedule[1].name", "also schedule[0]"),
    ],
)
def test_a_bad_table_is_named_with_its_key_and_file(tmp_path: Path, table: str, key: str, words: str) -> None:
    path = config(tmp_path, GOOD, table)
    with pytest.raises(ConfigError) as caught:
        load_settings(config_path=path, environ={})
    assert (caught.value.key, caught.value.source) == (key, str(path))
    assert words in caught.value.reason


def test_good_tables_become_schedules_named_after_their_agent_by_default(tmp_path: Path) -> None:
    second = 'name = "nightly"\nagent = "echo"\ngid = "GID-2"\ncron = "0 3 * * *"\ncatch_up = "all"\n'
    settings = load_settings(config_path=config(tmp_path, GOOD, second), environ={})
    first, nightly = configured_schedules(settings)
    assert (first.name, first.catch_up, first.timezone) == ("echo", CatchUp.LATEST, "UTC")
    assert (nightly.name, nightly.agent, nightly.catch_up) == ("nightly", "echo", CatchUp.ALL)


def test_a_table_for_an_agent_the_daemon_does_not_load_stops_it_at_the_start(tmp_path: Path) -> None:
    table = 'agent = "reportz"\ngid = "GID-1"\ncron = "*/5 * * * *"\n'
    settings = load_settings(config_path=config(tmp_path, GOOD, table), environ={})
    registry = Registry()
    registry.register("echo", _handler)
    with pytest.raises(ConfigError) as caught:
        resolve_schedules(settings, registry)
    assert caught.value.key == "schedule[1].agent"
    assert "unknown agent 'reportz'" in caught.value.reason


def test_a_payload_over_the_limit_stops_the_daemon_at_the_start(tmp_path: Path) -> None:
    table = GOOD + 'payload = "' + "x" * 2000 + '"\n'
    settings = load_settings(config_path=config(tmp_path, table), environ={}, flags={"max_payload_bytes": 1000})
    registry = Registry()
    registry.register("echo", _handler)
    with pytest.raises(ConfigError, match="its job would be refused"):
        resolve_schedules(settings, registry)


@pytest.mark.parametrize(
    ("options", "key", "words"),
    [
        ({"schedule": "*/5 * * *", "gid": "GID-1"}, "@agent('report').cron", "has 4 fields"),
        ({"schedule": "*/5 * * * *"}, "@agent('report').gid", "missing"),
        ({"gid": "GID-1"}, "@agent('report').gid", "give schedule= too"),
        (
            {"schedule": "*/5 * * * *", "gid": "GID-1", "timezone": "Nowhere/City"},
            "@agent('report').timezone",
            "unknown",
        ),
    ],
)
def test_a_bad_agent_schedule_fails_at_the_decorator(options: dict[str, str], key: str, words: str) -> None:
    registry = Registry()
    with pytest.raises(ConfigError) as caught:
        agent("report", registry=registry, **options)(_handler)  # type: ignore[arg-type]
    assert caught.value.key == key
    assert words in caught.value.reason
    assert "report" not in registry


def test_a_table_named_like_an_agents_schedule_replaces_it(tmp_path: Path) -> None:
    registry = Registry()
    agent("echo", registry=registry, schedule="0 * * * *", gid="GID-DECORATED")(_handler)
    assert [s.cron for s in resolve_schedules(load_settings(environ={}, config_path=config(tmp_path)), registry)] == [
        "0 * * * *"
    ]
    replaced = resolve_schedules(load_settings(config_path=config(tmp_path, GOOD), environ={}), registry)
    assert [(s.name, s.cron, s.gid) for s in replaced] == [("echo", "*/5 * * * *", "GID-1")]


async def _handler(ctx: object, payload: object) -> None:
    return None
