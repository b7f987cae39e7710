"""The state directory: created 0700, checked writable, and locked by one daemon at a time."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Final

from swarmd.errors import DaemonAlreadyRunning, StateDirError

LOCK_NAME: Final = "swarmd.lock"


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
    return path


class StateLock:
    """An exclusive flock on ``swarmd.lock``; the file holds the holder's pid."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise DaemonAlreadyRunning(str(self.path.parent), holder) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip())
    except (ValueError, OSError):
        return None
