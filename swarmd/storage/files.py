"""Opening a state directory and its files as if someone else had been there first.

The state directory holds the queue, the ledger and the lock. Anyone who can write in it can
plant a symlink (``swarmd.lock -> /etc/victim``) and have the daemon truncate the target, or
point ``swarmd.db`` somewhere else. So the directory must belong to this user and be writable by
no one else (root may use another user's, with a warning); a directory that is ours but open to
others is tightened to 0700 before anything in it is trusted, and the files swarmd opens are
never followed through a symlink, never another user's, and never readable by others.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from swarmd.errors import StateDirError

#: The files SQLite opens beside a database (its write-ahead log, shared memory, journal).
SQLITE_SUFFIXES: Final = ("", "-wal", "-shm", "-journal")


def check_directory(path: Path) -> list[str]:
    """Refuse a state directory another user could write in; return warnings to log.

    It must exist and be a directory (symlinks to one are fine: the check is on the target).
    Owned by another user: refused, except for root, which gets a warning. Writable by group or
    others: tightened to 0700 when it is ours (nothing written before is trusted: the files are
    checked one by one when opened), else refused.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        raise StateDirError(str(path), "does not exist") from None
    except OSError as exc:
        raise StateDirError(str(path), f"cannot be read: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise StateDirError(str(path), "is not a directory")
    warnings: list[str] = []
    me = os.geteuid()
    if info.st_uid != me:
        if me != 0:
            raise StateDirError(str(path), f"belongs to uid {info.st_uid}, not to this user (uid {me})")
        warnings.append(f"state directory {path} belongs to uid {info.st_uid}; root uses it anyway")
    if stat.S_IMODE(info.st_mode) & 0o022:
        if info.st_uid != me:
            mode = stat.S_IMODE(info.st_mode)
            raise StateDirError(str(path), f"is writable by group or others (mode {mode:04o}): chmod 0700 it")
        os.chmod(path, 0o700)
        warnings.append(f"state directory {path} was writable by group or others: tightened to 0700")
    return warnings


def check_file(path: Path) -> None:
    """Refuse a symlink, a non-regular file or another user's file at ``path`` (absent is fine);
    tighten a file of ours that others may read to 0600."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        raise StateDirError(str(path.parent), f"{path.name} is a symlink; swarmd never follows one there")
    if not stat.S_ISREG(info.st_mode):
        raise StateDirError(str(path.parent), f"{path.name} is not a regular file")
    me = os.geteuid()
    if me not in (info.st_uid, 0):
        raise StateDirError(str(path.parent), f"{path.name} belongs to uid {info.st_uid}, not to this user (uid {me})")
    if stat.S_IMODE(info.st_mode) & 0o077 and info.st_uid == me:
        os.chmod(path, 0o600, follow_symlinks=False)


def check_sqlite_files(database: Path) -> None:
    """`check_file` on a database and every file SQLite opens beside it."""
    check_files(database.with_name(database.name + suffix) for suffix in SQLITE_SUFFIXES)


def check_files(paths: Iterable[Path]) -> None:
    for path in paths:
        check_file(path)


def open_private(path: Path, flags: int = os.O_RDWR) -> int:
    """Open (creating it 0600 if absent) a file of ours: never through a symlink, never a
    file of another user. Returns the file descriptor."""
    base = flags | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, base | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        check_file(path)
        try:
            fd = os.open(path, base)
        except OSError as exc:  # ELOOP: it became a symlink after the check
            raise StateDirError(str(path.parent), f"cannot open {path.name}: {exc.strerror}") from None
    except OSError as exc:
        raise StateDirError(str(path.parent), f"cannot create {path.name}: {exc.strerror}") from None
    return fd
