"""The state directory: created 0700, checked writable and ours, and locked by one daemon at a time."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Final

import structlog

from swarmd.errors import DaemonAlreadyRunning, StateDirError
from swarmd.storage.files import check_directory, open_private

LOCK_NAME: Final = "swarmd.lock"
log = structlog.get_logger("swarmd.daemon")


def prepare(path: Path) -> Path:
    """Create the directory (0700) if needed and prove we can write in it."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        raise StateDirError(str(path), "exists and is not a directory") from None
    except PermissionError:
        raise StateDirError(str(path), "cannot be created: permission denied") from None
    except OSError as exc:
        raise StateDirError(str(path), f"cannot be created: {exc.strerror}") from None
    if not path.is_dir():
        raise StateDirError(str(path), "is not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise StateDirError(str(path), "is not writable by this user")
    for warning in check_directory(path):
        log.warning("state_dir_warning", state_dir=str(path), warning=warning)
    return path


class StateLock:
    """An exclusive flock on the state directory itself, so that deleting or replacing a file
    in it cannot let a second daemon in; ``swarmd.lock`` holds the holder's pid, for messages."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self._dir_fd: int | None = None
        self._fd: int | None = None

    def acquire(self) -> None:
        dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(dir_fd)
            raise DaemonAlreadyRunning(str(self.path.parent), _holder(self.path)) from None
        try:
            fd = open_private(self.path)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except BaseException:
            os.close(dir_fd)
            raise
        self._dir_fd, self._fd = dir_fd, fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None
        if self._dir_fd is not None:
            os.close(self._dir_fd)  # closing the last descriptor releases the flock
            self._dir_fd = None


def _holder(path: Path) -> int | None:
    """The pid the lock holder wrote (None: unreadable, or not a pid)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return int(os.pread(fd, 32, 0).decode().strip())
    except (ValueError, OSError):
        return None
    finally:
        os.close(fd)
