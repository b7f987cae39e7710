"""State that can be upgraded: the schema version of an SQLite file and of a Redis prefix.

A state newer than this swarmd is refused with `StateVersionError` and left as it was; an older
one is brought forward by the numbered migrations (injected here, in place of today's, which
the in-process tests set aside so that they measure the mechanism alone), once, atomically; an
up-to-date one is only read. And a state directory written by the first
versioned release (``tests/data/state-v1``) still opens and serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from support.harness import Daemon, ledger, ledger_count, submit, swarmd, wait_until
from support.services import require_redis

from swarmd.errors import StateVersionError
from swarmd.model import Job, new_job
from swarmd.queue.sqlite.backend import DB_NAME, SqliteBackend
from swarmd.storage import migrations
from swarmd.storage import sqlite as storage
from swarmd.storage.migrations import Migration

#: Today's migrations (the autouse fixture below sets them aside in this process).
REAL_MIGRATIONS = migrations.MIGRATIONS
V1_STATE = Path(__file__).resolve().parents[1] / "data" / "state-v1" / DB_NAME
#: What the v1 state directory holds (see its README.md).
V1_ENTRIES = 7
V1_DELAYED = "01a23aeb3f5db8b3ab7029f3caaa5021"
V1_DEAD = "01a23aeb3db6f3951796dadb31c09e17"


# -- SQLite: the mechanism ----------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _mechanism_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """In this process, no migration of today's: each test injects the steps it measures (the
    daemons these tests start run the real ones)."""
    from swarmd.queue.redis import migrations as redis_migrations  # noqa: PLC0415 - the redis extra

    monkeypatch.setattr(migrations, "MIGRATIONS", ())
    monkeypatch.setattr(redis_migrations, "MIGRATIONS", ())


def _make_state(path: Path) -> None:
    """A file at the version this code knows, with one queued job."""
    storage.connect(path).close()
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("INSERT INTO jobs (id, agent, gid, state, body) VALUES ('j1', 'echo', 'g', 'ready', x'00')")


def _dump(path: Path) -> list[str]:
    """The whole content of the file, as SQL (read-only)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return list(conn.iterdump())


def _version(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return str(conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])


def _columns(path: Path, table: str) -> list[str]:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return [str(row[1]) for row in conn.execute(f"PRAGMA table_info({table})")]


def _add_note_column(runs: list[int]) -> Migration:
    def apply(conn: sqlite3.Connection) -> None:
        runs.append(2)
        conn.execute("ALTER TABLE jobs ADD COLUMN note TEXT NOT NULL DEFAULT ''")
        conn.execute("UPDATE jobs SET note = 'migrated'")

    return Migration(2, "jobs get a note", apply)


def _refuse(to_version: int) -> Migration:
    def apply(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half_done (x INTEGER)")  # written, then rolled back
        raise RuntimeError("this step refuses on purpose")

    return Migration(to_version, "a step that fails", apply)


def test_a_fresh_file_starts_at_the_known_version(tmp_path: Path) -> None:
    storage.connect(tmp_path / DB_NAME).close()
    assert _version(tmp_path / DB_NAME) == str(migrations.known_version()) == "1"


def test_an_older_file_runs_each_missing_step_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / DB_NAME
    _make_state(path)
    runs: list[int] = []
    monkeypatch.setattr(migrations, "MIGRATIONS", (_add_note_column(runs),))
    storage.connect(path).close()
    storage.connect(path).close()
    assert runs == [2]
    assert _version(path) == "2"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT id, note FROM jobs").fetchall() == [("j1", "migrated")]


def test_a_fresh_file_is_created_at_version_1_then_migrated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[int] = []
    monkeypatch.setattr(migrations, "MIGRATIONS", (_add_note_column(runs),))
    storage.connect(tmp_path / DB_NAME).close()
    assert runs == [2]
    assert _version(tmp_path / DB_NAME) == "2"
    assert "note" in _columns(tmp_path / DB_NAME, "jobs")


def test_a_failing_step_leaves_the_file_at_v1_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / DB_NAME
    _make_state(path)
    before = _dump(path)
    runs: list[int] = []
    # Step 2 succeeds, step 3 fails: both run in the one opening transaction, so neither stays.
    monkeypatch.setattr(migrations, "MIGRATIONS", (_add_note_column(runs), _refuse(3)))
    with pytest.raises(RuntimeError, match="refuses on purpose"):
        storage.connect(path)
    assert runs == [2]
    assert _dump(path) == before
    assert _version(path) == "1"
    assert "note" not in _columns(path, "jobs")


def _set_version(path: Path, version: int) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))


def test_a_newer_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    _make_state(path)
    _set_version(path, 7)
    before = _dump(path)
    with pytest.raises(StateVersionError) as refused:
        storage.connect(path)
    assert (refused.value.where, refused.value.found, refused.value.known) == (str(path), 7, 1)
    assert str(path) in str(refused.value) and "version 7" in str(refused.value)
    assert _dump(path) == before


async def test_the_queue_backend_refuses_a_newer_file(tmp_path: Path) -> None:
    _make_state(tmp_path / DB_NAME)
    _set_version(tmp_path / DB_NAME, 2)
    backend = SqliteBackend(tmp_path)
    with pytest.raises(StateVersionError):
        await backend.open()
    await backend.close()


def test_the_check_needs_no_write(tmp_path: Path) -> None:
    """A read-only connection can tell a newer file (and does not need to migrate)."""
    path = tmp_path / DB_NAME
    _make_state(path)
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        assert storage.schema_version(conn, path) == 1
    _set_version(path, 2)
    read_only = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    with contextlib.closing(read_only) as conn, pytest.raises(StateVersionError):
        storage.schema_version(conn, path)


@contextlib.contextmanager
def _write_lock_held(path: Path) -> Iterator[None]:
    """Another connection holds the file's write lock throughout."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            other.execute("ROLLBACK")


@pytest.mark.parametrize("version", [1, 2])
def test_opening_an_up_to_date_file_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: int
) -> None:
    path = tmp_path / DB_NAME
    runs: list[int] = []
    if version == 2:
        monkeypatch.setattr(migrations, "MIGRATIONS", (_add_note_column(runs),))
    _make_state(path)
    before = _dump(path)
    # Any write would wait for the lock and give up after 50 ms: opening must not try one.
    monkeypatch.setattr(storage, "BUSY_TIMEOUT_MS", 50)
    with _write_lock_held(path):
        storage.connect(path).close()
    assert _dump(path) == before
    assert runs == ([2] if version == 2 else [])  # from `_make_state`'s own opening only


def test_two_openings_at_once_migrate_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second opening saw version 1, but finds version 2 once it holds the write lock."""
    path = tmp_path / DB_NAME
    _make_state(path)
    runs: list[int] = []
    in_step, saw_v1 = threading.Event(), threading.Event()
    add_note = _add_note_column(runs).apply

    def slow_step(conn: sqlite3.Connection) -> None:
        add_note(conn)
        in_step.set()
        assert saw_v1.wait(10)

    read_version = storage.schema_version

    def watched(conn: sqlite3.Connection, where: Path) -> int | None:
        found = read_version(conn, where)
        if threading.current_thread().name == "second" and found == 1:
            saw_v1.set()
        return found

    monkeypatch.setattr(migrations, "MIGRATIONS", (Migration(2, "jobs get a note", slow_step),))
    monkeypatch.setattr(storage, "schema_version", watched)
    errors: list[BaseException] = []

    def open_once() -> None:
        try:
            storage.connect(path).close()
        except BaseException as exc:
            errors.append(exc)

    first = threading.Thread(target=open_once, name="first")
    first.start()
    assert in_step.wait(10)
    second = threading.Thread(target=open_once, name="second")
    second.start()
    first.join(10)
    second.join(10)
    assert not first.is_alive() and not second.is_alive()
    assert errors == []
    assert runs == [2]
    assert _version(path) == "2"


# -- SQLite: a state directory of version 1, served by today's daemon ------------------------------
@pytest.mark.slow
def test_a_v1_state_directory_opens_and_serves(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    shutil.copyfile(V1_STATE, state / DB_NAME)
    os.chmod(state / DB_NAME, 0o600)
    old = ledger(state)
    assert len(old) == V1_ENTRIES

    daemon = Daemon(state, "--agents", "support.agents").start()
    try:
        assert "ledger ok: 7 entries" in swarmd("ledger", "verify", "--state-dir", str(state)).stdout
        listed = swarmd("jobs", "--state-dir", str(state), "--json").stdout
        states = {job["job_id"]: job["state"] for job in msgspec.json.decode(listed)}
        assert states == {V1_DELAYED: "delayed", V1_DEAD: "dead"}

        new = submit(state, "echo", "GID-after-upgrade", payload={"n": 2}, count=2)
        wait_until(lambda: ledger_count(state) == V1_ENTRIES + 2, what="the new jobs in the ledger")
        assert daemon.stop() == 0
    finally:
        daemon.ensure_dead()

    assert "ledger ok: 9 entries" in swarmd("ledger", "verify", "--state-dir", str(state)).stdout
    entries = ledger(state)
    assert entries[:V1_ENTRIES] == old
    assert sorted(entry["job_id"] for entry in entries[V1_ENTRIES:]) == sorted(new)
    assert entries[V1_ENTRIES]["prev_hash"] == old[-1]["hash"]
    assert _version(state / DB_NAME) == str(len(REAL_MIGRATIONS) + 1)  # the daemon ran today's steps


async def test_a_v1_state_file_takes_a_migration_and_keeps_its_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every real step, then one more (a column no release has): the chain and the jobs stay
    as they were, and the file ends at the last step's version."""
    shutil.copyfile(V1_STATE, tmp_path / DB_NAME)
    runs: list[int] = []
    extra = len(REAL_MIGRATIONS) + 2
    note = _add_note_column(runs)
    monkeypatch.setattr(migrations, "MIGRATIONS", (*REAL_MIGRATIONS, Migration(extra, note.description, note.apply)))
    backend = SqliteBackend(tmp_path)
    await backend.open()
    try:
        report = await backend.verify()
        assert report.ok and report.entries == V1_ENTRIES
        assert (await backend.status(V1_DELAYED)).state == "delayed"
    finally:
        await backend.close()
    assert runs == [2]  # the extra step ran once
    assert _version(tmp_path / DB_NAME) == str(extra)


@pytest.mark.slow
def test_the_cli_and_the_daemon_refuse_a_newer_state_directory(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    shutil.copyfile(V1_STATE, state / DB_NAME)
    os.chmod(state / DB_NAME, 0o600)
    newest = len(REAL_MIGRATIONS) + 1
    _set_version(state / DB_NAME, newest + 1)
    before = _dump(state / DB_NAME)

    verify = swarmd("ledger", "verify", "--state-dir", str(state), check=False)
    assert verify.returncode == 1
    assert f"schema version {newest + 1}, newer than this swarmd knows (up to {newest})" in verify.stderr

    daemon = Daemon(state).start(wait_ready=False)
    try:
        assert daemon.wait(30) == 1
    finally:
        daemon.ensure_dead()
    assert f"schema version {newest + 1}" in daemon.log()
    assert _dump(state / DB_NAME) == before


# -- Redis -----------------------------------------------------------------------------------------
@pytest.fixture
def redis_prefix() -> Iterator[tuple[str, str]]:
    """A Redis URL and a key prefix of this test's own, its keys deleted afterwards."""
    import redis  # noqa: PLC0415 - redis-py is optional

    url = require_redis()
    prefix = f"swarmd-test-{os.urandom(5).hex()}"
    try:
        yield url, prefix
    finally:
        with redis.Redis.from_url(url) as client:
            keys = list(client.scan_iter(match=f"{{{prefix}}}:*", count=1000))
            if keys:
                client.unlink(*keys)


def _redis_backend(url: str, prefix: str) -> Any:
    from swarmd.queue.redis.backend import RedisBackend  # noqa: PLC0415

    return RedisBackend(url, prefix=prefix)


@contextlib.asynccontextmanager
async def _opened(url: str, prefix: str) -> AsyncIterator[Any]:
    backend = _redis_backend(url, prefix)
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


def _redis_migrations(monkeypatch: pytest.MonkeyPatch, *lua_steps: tuple[str, str]) -> Any:
    """Make ``lua_steps`` (description, Lua) the Redis migrations 2, 3, ...; return the module."""
    from swarmd.queue.redis import migrations as redis_migrations  # noqa: PLC0415

    steps = tuple(
        redis_migrations.RedisMigration(version, description, lua)
        for version, (description, lua) in enumerate(lua_steps, start=2)
    )
    monkeypatch.setattr(redis_migrations, "MIGRATIONS", steps)
    return redis_migrations


async def _snapshot(client: Any, prefix: str) -> dict[bytes, bytes]:
    """Every key of the prefix with its serialized value."""
    keys = [key async for key in client.scan_iter(match=f"{{{prefix}}}:*", count=1000)]
    return {key: await client.dump(key) for key in sorted(keys)}


#: A Redis step that checks before it writes, and refuses.
REFUSING_STEP: tuple[str, str] = (
    "a step that fails",
    "if redis.call('EXISTS', P .. 'never') == 0 then error('refuses on purpose') end\nredis.call('SET', P .. 'x', 1)",
)


def _job() -> Job:
    return new_job(agent="echo", gid="GID-redis", payload={"n": 1})


@pytest.mark.redis
async def test_redis_a_prefix_records_its_version_at_first_open(redis_prefix: tuple[str, str]) -> None:
    url, prefix = redis_prefix
    async with _opened(url, prefix) as backend:
        assert await backend.client.get(f"{{{prefix}}}:schema_version") == b"1"


@pytest.mark.redis
async def test_redis_a_prefix_without_a_version_is_at_version_1(redis_prefix: tuple[str, str]) -> None:
    """A prefix written before the version was recorded keeps its jobs and gets the key."""
    url, prefix = redis_prefix
    async with _opened(url, prefix) as backend:
        job_id = (await backend.submit([_job()]))[0]
        await backend.client.delete(f"{{{prefix}}}:schema_version")
    async with _opened(url, prefix) as backend:
        assert await backend.client.get(f"{{{prefix}}}:schema_version") == b"1"
        assert (await backend.status(job_id)).state == "ready"


@pytest.mark.redis
async def test_redis_an_older_prefix_migrates_once_when_two_daemons_open_it_at_once(
    redis_prefix: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, prefix = redis_prefix
    async with _opened(url, prefix):
        pass  # the prefix is at version 1
    _redis_migrations(monkeypatch, ("count the runs", "redis.call('INCR', P .. 'runs')"))
    backends = [_redis_backend(url, prefix) for _ in range(2)]
    try:
        await asyncio.gather(*(backend.open() for backend in backends))
        client = backends[0].client
        assert await client.get(f"{{{prefix}}}:runs") == b"1"
        assert await client.get(f"{{{prefix}}}:schema_version") == b"2"
    finally:
        for backend in backends:
            await backend.close()
    async with _opened(url, prefix) as backend:
        assert await backend.client.get(f"{{{prefix}}}:runs") == b"1"


@pytest.mark.redis
async def test_redis_a_failing_step_leaves_the_prefix_at_v1_untouched(
    redis_prefix: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from redis.exceptions import ResponseError  # noqa: PLC0415

    url, prefix = redis_prefix
    async with _opened(url, prefix) as backend:
        await backend.submit([_job()])
        before = await _snapshot(backend.client, prefix)
    assert before[f"{{{prefix}}}:schema_version".encode()]
    _redis_migrations(monkeypatch, REFUSING_STEP)
    with pytest.raises(ResponseError, match="refuses on purpose"):
        async with _opened(url, prefix):
            pass
    _redis_migrations(monkeypatch)
    async with _opened(url, prefix) as backend:
        assert await _snapshot(backend.client, prefix) == before
        assert await backend.client.get(f"{{{prefix}}}:schema_version") == b"1"


@pytest.mark.redis
async def test_redis_a_failing_step_keeps_the_steps_before_it(
    redis_prefix: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis cannot roll a script back: each step is recorded as it completes, so a prefix is
    always at the version whose steps it holds (here 2), and the next open resumes from there."""
    from redis.exceptions import ResponseError  # noqa: PLC0415

    url, prefix = redis_prefix
    async with _opened(url, prefix):
        pass
    _redis_migrations(monkeypatch, ("count the runs", "redis.call('INCR', P .. 'runs')"), REFUSING_STEP)
    with pytest.raises(ResponseError, match="refuses on purpose"):
        async with _opened(url, prefix):
            pass
    _redis_migrations(monkeypatch, ("count the runs", "redis.call('INCR', P .. 'runs')"))
    async with _opened(url, prefix) as backend:
        assert await backend.client.get(f"{{{prefix}}}:schema_version") == b"2"
        assert await backend.client.get(f"{{{prefix}}}:runs") == b"1"


@pytest.mark.redis
async def test_redis_a_newer_prefix_is_refused_and_left_alone(redis_prefix: tuple[str, str]) -> None:
    url, prefix = redis_prefix
    async with _opened(url, prefix) as backend:
        await backend.submit([_job()])
        await backend.client.set(f"{{{prefix}}}:schema_version", "3")
        before = await _snapshot(backend.client, prefix)
    refused_backend = _redis_backend(url, prefix)
    with pytest.raises(StateVersionError) as refused:
        await refused_backend.open()
    assert (refused.value.found, refused.value.known) == (3, 1)
    assert prefix in refused.value.where and "127.0.0.1:6379" in refused.value.where
    async with redis_asyncio_client(url) as client:
        assert await _snapshot(client, prefix) == before


@contextlib.asynccontextmanager
async def redis_asyncio_client(url: str) -> AsyncIterator[Any]:
    from redis.asyncio import Redis  # noqa: PLC0415

    client = Redis.from_url(url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_redis_the_script_refuses_a_newer_prefix_too(
    redis_prefix: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A newer daemon may raise the version between the GET and the script: still refused."""
    url, prefix = redis_prefix
    redis_migrations = _redis_migrations(monkeypatch)
    key = f"{{{prefix}}}:schema_version"
    async with redis_asyncio_client(url) as client:
        await client.set(key, "5")
        outcome = await client.register_script(redis_migrations.upgrade_script())(keys=[key], args=[f"{{{prefix}}}:"])
        assert outcome == [b"newer", 5]
        assert await client.get(key) == b"5"


@pytest.mark.redis
async def test_redis_opening_an_up_to_date_prefix_writes_nothing(
    redis_prefix: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, prefix = redis_prefix
    async with _opened(url, prefix) as backend:
        await backend.submit([_job()])
        before = await _snapshot(backend.client, prefix)
    redis_migrations = _redis_migrations(monkeypatch)

    def no_script() -> str:
        raise AssertionError("an up-to-date prefix needs no script (the only thing that writes)")

    monkeypatch.setattr(redis_migrations, "upgrade_script", no_script)
    async with _opened(url, prefix) as backend:
        assert await _snapshot(backend.client, prefix) == before
