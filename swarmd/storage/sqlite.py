"""One SQLite file (WAL): the schema, connection settings, transactions and its own thread.

Both the durable ledger and the local queue live in the same file, so that finishing a job
(its ledger entry and the removal of its lease) is one transaction. Everything here is
synchronous and runs on one thread per connection (`SqliteThread`); the event loop never
touches the database directly.

The file carries its schema version (``meta.schema_version``). Opening it refuses a version
newer than this swarmd knows (`StateVersionError`) and brings an older one forward by the
numbered steps of `swarmd.storage.migrations`, in one transaction; an up-to-date file is only
read.
"""

from __future__ import annotations

import asyncio
import enum
import fcntl
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final, TypeVar

import structlog

from swarmd.errors import LedgerError, StateDirError, StateVersionError
from swarmd.storage import migrations
from swarmd.storage.files import check_sqlite_files, open_private

T = TypeVar("T")

log = structlog.get_logger("swarmd.storage")
BUSY_TIMEOUT_MS: Final = 30_000
#: Bytes the WAL is cut back to when it starts over (``PRAGMA journal_size_limit``).
JOURNAL_SIZE_LIMIT: Final = 16 * 1024 * 1024

#: Schema version 1 (`migrations.BASE_VERSION`), what a fresh file starts at. Changing it is
#: a migration: a new step in `swarmd.storage.migrations`, never an edit here.
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ledger (
    idx       INTEGER PRIMARY KEY,
    job_id    TEXT UNIQUE,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL,
    record    BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    agent       TEXT NOT NULL,
    gid         TEXT NOT NULL,
    priority    INTEGER NOT NULL DEFAULT 0,
    not_before  REAL NOT NULL DEFAULT 0,
    state       TEXT NOT NULL,
    attempt     INTEGER NOT NULL DEFAULT 0,
    lease_until REAL,
    owner       TEXT,
    swarm_id    TEXT,
    cancel      INTEGER NOT NULL DEFAULT 0,
    error       TEXT,
    dead_at     REAL,
    body        BLOB NOT NULL
);
-- Partial indexes only: each state change touches just the index of the state it leaves or
-- enters, which keeps reserving and finishing (the hot path) cheap.
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (priority DESC, seq) WHERE state = 'ready';
CREATE INDEX IF NOT EXISTS jobs_delayed ON jobs (not_before) WHERE state = 'delayed';
CREATE INDEX IF NOT EXISTS jobs_leased ON jobs (owner) WHERE state = 'leased';
CREATE INDEX IF NOT EXISTS jobs_dead ON jobs (dead_at) WHERE state = 'dead';
CREATE INDEX IF NOT EXISTS jobs_swarm ON jobs (swarm_id) WHERE swarm_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS idempotency (
    key    TEXT PRIMARY KEY,
    job_id TEXT NOT NULL
);
"""


class Durability(enum.StrEnum):
    """What a committed transaction survives.

    ``full`` (default): synchronous=FULL; the WAL is fsynced at every commit, so anything
    acknowledged survives a crash of the process AND a power loss or kernel crash.
    ``normal``: synchronous=NORMAL; the WAL is fsynced only at checkpoints, so a process
    crash loses nothing but a power loss may roll back the last transactions committed
    since the last checkpoint (the database stays consistent).
    """

    FULL = "full"
    NORMAL = "normal"


class StateConnection(sqlite3.Connection):
    """A connection to the state database; ``write_lock`` (see `queue_writes`) is the file
    descriptor its write transactions flock first, or None; ``synchronous`` the level `connect`
    set (1 NORMAL, 2 FULL), so that a commit without fsync need not ask SQLite for it (each
    statement is a round trip of the GIL with the event loop)."""

    write_lock: int | None = None
    synchronous: int | None = None
    #: When (``time.perf_counter``) its newest write transaction got the write lock: what came
    #: before was a wait for another writer, which the hot path's own commits wait for alike.
    locked_at: float | None = None


def queue_writes(conn: sqlite3.Connection, lock_path: Path) -> None:
    """Make the write transactions of ``conn`` wait their turn on an flock of ``lock_path``
    (created 0600) before ``BEGIN IMMEDIATE``: processes that write one file all the time (the
    workers of one daemon) then wait in the kernel, woken the moment the writer before them
    commits, instead of in SQLite's busy handler, which sleeps 1, 2, 5, 10 ... ms between
    tries. Processes that do not take the lock (producers) still meet the busy handler."""
    if isinstance(conn, StateConnection) and conn.write_lock is None:
        conn.write_lock = open_private(lock_path)


def connect(path: Path, durability: Durability = Durability.FULL) -> sqlite3.Connection:
    """Open (creating if needed) the state database with swarmd's settings and schema.

    Files are created 0600. The connection is in autocommit mode: callers open explicit
    ``BEGIN IMMEDIATE`` transactions with `transaction`. Raises `StateVersionError` for a file
    written by a newer swarmd; migrates an older one (see `prepare_schema`).
    """
    check_sqlite_files(path)  # no symlink, no other user's file, nothing readable by others
    os.close(open_private(path))
    fresh = path.stat().st_size == 0
    conn = sqlite3.connect(
        path,
        isolation_level=None,
        check_same_thread=False,
        timeout=BUSY_TIMEOUT_MS / 1000,
        factory=StateConnection,
    )
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    # Pages freed by archiving go back to the file system (`vacuum_step`). This takes effect
    # only in a file that has no table yet, so it must come before WAL mode writes the header;
    # an older file keeps auto_vacuum=NONE (its free pages are reused, not returned) until a
    # VACUUM, which the README's "Archives and anchors" explains. (Set on an existing file, it
    # would take the write lock: opening an up-to-date file writes nothing.)
    if fresh:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        raise LedgerError(f"{path}: cannot switch to WAL journal mode (got {mode!r})")
    conn.execute(f"PRAGMA synchronous = {'FULL' if durability is Durability.FULL else 'NORMAL'}")
    if isinstance(conn, StateConnection):
        conn.synchronous = 2 if durability is Durability.FULL else 1
    # When the WAL starts over (a checkpoint copied everything and no reader needs it), SQLite
    # truncates the file to this size: a burst's WAL shrinks back without a TRUNCATE checkpoint.
    conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("PRAGMA temp_store = MEMORY")
    try:
        prepare_schema(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def connect_readonly(path: Path) -> sqlite3.Connection:
    """Open an existing state database for reading only: it writes nothing, creates nothing (no
    -wal, no -shm where it may not), and works on a read-only file or directory, such as an
    auditor's copy. Raises `StateDirError` when there is no database, `StateVersionError` for
    a newer one."""
    if not path.is_file():
        raise StateDirError(str(path.parent), f"holds no swarmd state ({path.name} not found): is the state dir right?")
    uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError:
            # A WAL database whose -shm cannot be created here (a read-only directory): read it
            # as an immutable snapshot, which is what an auditor's copy is. Immutable reads
            # ignore a write-ahead log, so one with frames in it would be silently missed.
            conn.close()
            wal = path.with_name(path.name + "-wal")
            if wal.exists() and wal.stat().st_size > 0:
                raise StateDirError(
                    str(path.parent),
                    f"{wal.name} holds recent writes that cannot be read without write access here; "
                    f"copy the state with: sqlite3 {path} '.backup COPY.db'",
                ) from None
            conn = sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None, check_same_thread=False)
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        if schema_version(conn, path) is None:
            raise StateDirError(str(path.parent), f"{path.name} is not a swarmd state database (no schema version)")
    except BaseException:
        conn.close()
        raise
    return conn


def schema_version(conn: sqlite3.Connection, path: Path) -> int | None:
    """The file's schema version (None: a fresh file, without one yet), read without writing.

    Raises `StateVersionError` if it is newer than this swarmd knows.
    """
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone() is None:
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        return None
    try:
        found = int(row[0])
    except ValueError:
        raise LedgerError(f"{path}: meta.schema_version is {row[0]!r}, not a number") from None
    known = migrations.known_version()
    if found > known:
        raise StateVersionError(str(path), found, known)
    return found


def prepare_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the file to the newest schema: create it (version 1) if fresh, then run the
    migrations it lacks, all in one transaction; an up-to-date file is only read.

    The version is read again once the write lock is held: another process may have
    migrated the file in between.
    """
    if schema_version(conn, path) == migrations.known_version():
        return
    with transaction(conn):
        found = schema_version(conn, path)
        if found is None:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(migrations.BASE_VERSION),))
        steps = migrations.run_pending(conn, migrations.BASE_VERSION if found is None else found)
    if steps and found is not None:
        log.info(
            "state migrated",
            path=str(path),
            from_version=found,
            to_version=steps[-1].to_version,
            steps=[f"{step.to_version}: {step.description}" for step in steps],
        )


def quick_check(conn: sqlite3.Connection, limit: int = 10) -> list[str]:
    """SQLite's ``PRAGMA quick_check``: the problems it finds in the file (none: an empty list).
    It reads every page (O(size), no index cross-check), so it is run at a daemon's start only."""
    rows = [str(row[0]) for row in conn.execute(f"PRAGMA quick_check({int(limit)})")]
    return [] if rows == ["ok"] else rows


def synchronous_level(conn: sqlite3.Connection) -> int:
    """The connection's ``PRAGMA synchronous`` (1 NORMAL, 2 FULL): as `connect` set it, or asked."""
    level = getattr(conn, "synchronous", None)
    return int(conn.execute("PRAGMA synchronous").fetchone()[0]) if level is None else int(level)


class transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK`` on any exception).

    ``no_fsync=True`` commits this one transaction without syncing the WAL (for leases: a lease
    lost to a power failure only means its job runs again). The next durable commit syncs the
    WAL, and with it every frame written before, so nothing acknowledged depends on it.
    """

    def __init__(self, conn: sqlite3.Connection, *, no_fsync: bool = False) -> None:
        self.conn = conn
        self.no_fsync = no_fsync
        self._restore: int | None = None
        self._lock: int | None = None

    def __enter__(self) -> sqlite3.Connection:
        self._lock = getattr(self.conn, "write_lock", None)
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_EX)
        try:
            return self._begin()
        except BaseException:
            self._unlock()
            raise

    def _unlock(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)

    def _begin(self) -> sqlite3.Connection:
        if self.no_fsync:
            level = synchronous_level(self.conn)
            if level > 1:  # FULL or EXTRA: relax to NORMAL for this commit only
                self.conn.execute("PRAGMA synchronous = NORMAL")
                self._restore = level
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            if isinstance(self.conn, StateConnection):
                self.conn.locked_at = time.perf_counter()
        except BaseException:
            if self._restore is not None:  # never leave later, durable commits without fsync
                self.conn.execute(f"PRAGMA synchronous = {self._restore}")
            raise
        return self.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None:
                self.conn.execute("COMMIT")
            elif self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
        finally:
            self._unlock()
            if self._restore is not None:
                self.conn.execute(f"PRAGMA synchronous = {self._restore}")


class SqliteThread:
    """Runs all of one connection's work on one dedicated thread, awaited from the loop.

    ``inline=True`` runs it on the caller's thread instead, blocking its loop: for an event
    loop that has nothing else to run (the blocking `Client`'s own), where the hand-off to a
    thread and back would only add latency (80-250 us per call measured on a 2-vCPU VM).
    """

    def __init__(self, name: str = "swarmd-sqlite", *, inline: bool = False) -> None:
        self._executor = None if inline else ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, fn: Callable[[], T]) -> T:
        if self._executor is None:
            return fn()
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)


#: Most pages one incremental-vacuum step frees (`vacuum_step`): a transaction of a few milliseconds.
VACUUM_PAGES: Final = 128


def free_pages(conn: sqlite3.Connection) -> int:
    """Pages `vacuum_step` can give back: the file's freelist, or 0 in a file without
    auto_vacuum=INCREMENTAL (written before it was the default), whose free pages are reused."""
    if int(conn.execute("PRAGMA auto_vacuum").fetchone()[0]) != 2:
        return 0
    return int(conn.execute("PRAGMA freelist_count").fetchone()[0])


def vacuum_step(conn: sqlite3.Connection, pages: int = VACUUM_PAGES) -> None:
    """One step of giving freed pages back after large deletes: an incremental vacuum of at most
    ``pages`` pages, in its own transaction. The caller (`SqliteBackend.reclaim_space`) asks
    `free_pages` once, then runs as many steps as that needs, one per call on the connection's
    thread, so that the hot path's commits run between two steps.

    The step commits without syncing the WAL (as `transaction` with ``no_fsync``): a step lost
    to a power failure only gives its pages back later, and the next durable commit syncs it.
    It is one script of five statements: each statement lets go of the GIL and must wait to take
    it back from a busy event loop, which was most of a step's hold, with the fsync. (Its hold
    counts any wait for another writer's lock: the script's BEGIN cannot be timed apart.)"""
    level = synchronous_level(conn)
    relax, restore = ("PRAGMA synchronous = NORMAL; ", f" PRAGMA synchronous = {level};") if level > 1 else ("", "")
    # executescript steps the pragma to its end; `execute` would free one page per call.
    try:
        conn.executescript(f"{relax}BEGIN IMMEDIATE; PRAGMA incremental_vacuum({int(pages)}); COMMIT;{restore}")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if level > 1:
            conn.execute(f"PRAGMA synchronous = {level}")
        raise


def connect_aside(path: Path) -> sqlite3.Connection:
    """A second connection to the state database (already opened by `connect`), for work on a
    thread of its own that need not queue behind the hot path's commits: WAL checkpoints (a copy
    of the WAL into the database and its fsync, tens of milliseconds after a large delete) and
    long reads of the ledger. SQLite's WAL lets both go on beside the writer of another
    connection."""
    check_sqlite_files(path)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


def checkpoint_passive(conn: sqlite3.Connection) -> None:
    """Copy the WAL's frames written since the last checkpoint into the database, waiting for no
    one (PASSIVE): the frames a reader still needs stay for the next one."""
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()


def checkpoint_wal(conn: sqlite3.Connection) -> bool:
    """Checkpoint the WAL without waiting for anyone (PASSIVE); then, only if that copied every
    frame, truncate it, which is quick since nothing is left to copy, with busy_timeout 0 so that
    a writer or a reader come since makes it give up at once instead of waiting. Returns whether
    the WAL was truncated (False: the next call tries again)."""
    busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    if busy or frames != copied:
        return False
    conn.execute("PRAGMA busy_timeout = 0")  # someone came since: try next time
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return not busy
