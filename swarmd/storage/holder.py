"""Whether a daemon holds a state directory, asked from outside the daemon (a producer's check).

A running daemon holds an exclusive flock on the state directory itself for as long as it runs
(`swarmd.runtime.statedir.StateLock`). This module only looks: where the kernel lists its locks
(Linux's ``/proc/locks``) it reads them, so that asking never takes the lock even for an instant
(a daemon starting at that instant would find it taken and refuse to start); elsewhere it tries
a non-blocking shared flock and lets go at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Final

PROC_LOCKS: Final = Path("/proc/locks")


def daemon_holds(state_dir: Path) -> bool:
    """True if some process holds a flock on ``state_dir`` (a daemon serves it); False if none
    does or the directory does not exist."""
    try:
        info = os.stat(state_dir)
    except OSError:
        return False
    try:
        listed = PROC_LOCKS.read_text()
    except OSError:
        return _flock_taken(state_dir)
    return _listed(listed, info.st_dev, info.st_ino)


def _listed(proc_locks: str, device: int, inode: int) -> bool:
    """Whether ``/proc/locks`` text lists a FLOCK on this device and inode (``MAJ:MIN:INODE``,
    the device numbers in hex)."""
    wanted = f"{os.major(device):02x}:{os.minor(device):02x}:{inode}"
    for line in proc_locks.splitlines():
        fields = line.split()
        if "->" in fields:  # a waiter, not a holder
            continue
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted:
            return True
    return False


def _flock_taken(state_dir: Path) -> bool:
    try:
        fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
