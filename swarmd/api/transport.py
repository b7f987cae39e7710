"""Which way a client reaches the queue: the state directly, or the daemon's API socket.

- A socket given (``socket=``, ``--socket``, ``SWARMD_SOCKET``): that socket, always.
- Redis: directly (a producer with Redis credentials needs no daemon in between).
- SQLite whose state directory is the caller's to open (its owner, or root; or not created
  yet, for submitting while no daemon runs; or, for reading, one it may read): directly.
- Otherwise, the first API socket that answers (`socket_candidates`); if none does, a
  `StateDirError` that names every path tried and why each failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from swarmd.api.socket_backend import SocketBackend
from swarmd.config import Settings, resolve_api_socket
from swarmd.errors import ApiError, BackendUnavailable, StateDirError
from swarmd.queue.base import QueueBackend
from swarmd.queue.factory import open_backend
from swarmd.queue.sqlite.backend import SqliteBackend
from swarmd.queue.waiting import FinishedWaiters

#: Where the shipped systemd unit's daemon serves its socket (RuntimeDirectory=swarmd).
SYSTEMD_SOCKET: Final = Path("/run/swarmd/swarmd.sock")
#: The environment variable naming the socket to use.
SOCKET_ENV: Final = "SWARMD_SOCKET"


def choose_backend(
    settings: Settings,
    state_dir: Path,
    *,
    socket_path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    blocking: bool = False,
    read_only: bool = False,
) -> QueueBackend:
    """The backend a client should use (not opened yet); see the module's docstring."""
    environ = os.environ if environ is None else environ
    explicit = socket_path or environ.get(SOCKET_ENV)
    if explicit:
        return SocketBackend(Path(explicit).expanduser())
    if settings.backend == "redis":
        return open_backend(settings, state_dir, blocking=blocking, read_only=read_only)
    problem = direct_problem(state_dir, read_only=read_only)
    if problem is None:
        backend = open_backend(settings, state_dir, blocking=blocking, read_only=read_only)
        if isinstance(backend, SqliteBackend):  # its waits are woken through the daemon's socket
            backend.push = DaemonPush(socket_candidates(settings, state_dir, environ))
        return backend
    tried: list[str] = []
    for candidate in socket_candidates(settings, state_dir, environ):
        answer = probe(candidate)
        if answer is None:
            return SocketBackend(candidate)
        tried.append(f"the API socket {candidate} ({answer})")
    raise StateDirError(
        str(state_dir),
        f"{problem}; and no API socket answered: "
        + ", ".join(tried)
        + "; run as the daemon's user, or pass --socket PATH (SWARMD_SOCKET) of a running daemon",
    )


def direct_problem(state_dir: Path, *, read_only: bool = False) -> str | None:
    """Why this process cannot open ``state_dir`` itself (None: it can, or may create it).
    ``read_only``: reading is enough (an auditor's copy it may read but not write)."""
    try:
        info = state_dir.stat()
    except FileNotFoundError:
        return None
    except PermissionError:
        return "permission denied"
    if read_only and os.access(state_dir, os.R_OK | os.X_OK):
        return None
    euid = os.geteuid()
    if euid not in (0, info.st_uid):
        return f"belongs to uid {info.st_uid}, not to this user (uid {euid})"
    if not os.access(state_dir, os.R_OK | os.W_OK | os.X_OK):
        return "permission denied"
    return None


def socket_candidates(settings: Settings, state_dir: Path, environ: Mapping[str, str]) -> list[Path]:
    """The sockets a daemon with these settings may serve: its configured one, then the
    systemd unit's."""
    found = [resolve_api_socket(settings, state_dir, environ)]
    if SYSTEMD_SOCKET not in found:
        found.append(SYSTEMD_SOCKET)
    return found


def probe(path: Path) -> str | None:
    """Why nothing answers on the socket at ``path`` (None: something listens and lets us in)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(1.0)
        sock.connect(str(path))
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return "no such socket"
        if exc.errno in (errno.EACCES, errno.EPERM):
            return "permission denied: this user is not in the socket's group, or may not enter its directory"
        if exc.errno == errno.ECONNREFUSED:
            return "no daemon listens on it"
        return exc.strerror or str(exc)
    finally:
        sock.close()
    return None


#: Seconds a waiter with no daemon to push to waits before it looks and tries to connect again.
NO_DAEMON_RETRY: Final = 1.0
#: Longest one request of `DaemonPush`'s pump waits: a waiter that joins meanwhile is in the next.
PUMP_WAIT: Final = 1.0


class DaemonPush:
    """The commits of a local daemon, for a client that opens the SQLite state itself.

    Every wait of this client shares one connection to the daemon's API socket and one
    request in flight at a time: a pump asks the daemon for the commit of any job some local
    waiter waits for (`PUMP_WAIT` seconds at most per request, so a waiter that joins is in the
    next one), and wakes the waiters of what it commits. So 1,000 waits in one process cost the
    daemon one pending request, not 1,000. Where no daemon answers, a wait looks again within
    `NO_DAEMON_RETRY` (the backstop look then finds what committed) and tries to connect again.
    """

    def __init__(self, candidates: list[Path]) -> None:
        self._candidates = candidates
        self._socket: SocketBackend | None = None
        self._waiters = FinishedWaiters()
        self._pump: asyncio.Task[None] | None = None

    async def __call__(self, job_ids: list[str], seconds: float) -> set[str] | None:
        if self._socket is None and await self._connect() is None:  # no daemon now
            await asyncio.sleep(min(seconds, NO_DAEMON_RETRY))
            return None
        future = self._waiters.register(job_ids)
        if self._pump is None or self._pump.done():
            self._pump = asyncio.get_running_loop().create_task(self._run_pump())
        try:
            return await asyncio.wait_for(future, seconds)
        except TimeoutError:
            return set()
        finally:
            self._waiters.forget(job_ids, future)

    async def _run_pump(self) -> None:
        """Ask the daemon, one request at a time, for the commits of every awaited job."""
        while self._waiters and self._socket is not None:
            try:
                committed = await self._socket.committed(self._waiters.job_ids(), PUMP_WAIT)
            except (ApiError, BackendUnavailable, OSError):  # the daemon went away: every waiter looks
                await self.close()
                self._waiters.wake_all(None)
                return
            if committed:
                self._waiters.committed(committed)

    async def _connect(self) -> SocketBackend | None:
        for candidate in self._candidates:
            if probe(candidate) is None:
                connected = SocketBackend(candidate)
                try:
                    await connected.open()
                except (ApiError, BackendUnavailable, OSError):
                    continue
                self._socket = connected
                return connected
        return None

    async def close(self) -> None:
        pump, self._pump = self._pump, None
        if pump is not None and not pump.done() and pump is not asyncio.current_task():
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        if self._socket is not None:
            socket_backend, self._socket = self._socket, None
            await socket_backend.close()
