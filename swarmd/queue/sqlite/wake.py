"""Waking an idle daemon the moment work arrives, without polling.

The daemon binds a datagram socket in its state directory; a producer that has committed
jobs sends it one byte. A lost wake-up costs at most the daemon's idle poll interval.

With several worker processes (``workers`` > 1) the supervisor binds ``wake.sock`` and a
`WakeRelay` thread passes each datagram on to every worker's own socket (`worker_socket_name`):
producers keep sending one datagram to one path, and every worker wakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Final

from swarmd.queue.base import WakeReason

SOCKET_NAME: Final = "wake.sock"
#: Longest path an AF_UNIX socket address may have on Linux.
_MAX_PATH: Final = 107


def wake(state_dir: Path, reason: WakeReason = WakeReason.WORK) -> bool:
    """Tell the daemon of ``state_dir`` to look at the queue now. Never raises."""
    path = state_dir / SOCKET_NAME
    if len(os.fsencode(path)) > _MAX_PATH:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        try:
            sock.sendto(reason.value.encode(), os.fsencode(path))
        except OSError:
            return False  # no daemon listening, or its buffer is full: it will wake anyway
    return True


def _bind(path: Path, *, blocking: bool) -> socket.socket | None:
    """A datagram socket bound at ``path`` (replacing a stale one), readable by its owner only;
    None when the path is too long for AF_UNIX."""
    if len(os.fsencode(path)) > _MAX_PATH:
        return None
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setblocking(blocking)
    sock.bind(os.fsencode(path))
    os.chmod(path, 0o600)
    return sock


def worker_socket_name(index: int) -> str:
    """The wake socket of worker ``index`` (the supervisor's relay sends to it)."""
    return f"wake-w{index}.sock"


class WakeListener:
    """The daemon's side: sets `event` whenever a datagram arrives; `reasons` collects them."""

    def __init__(self, state_dir: Path, name: str = SOCKET_NAME) -> None:
        self.path = state_dir / name
        self.event = asyncio.Event()
        self.reasons: set[WakeReason] = set()
        self._sock: socket.socket | None = None

    def start(self) -> bool:
        """Bind and listen; False (polling only) when the path is too long for AF_UNIX."""
        sock = _bind(self.path, blocking=False)
        if sock is None:
            return False
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)
        return True

    def _readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(64)
            except (BlockingIOError, InterruptedError):
                break
            self.reasons.add(WakeReason.from_wire(data[:1]))
        self.event.set()

    def take(self) -> set[WakeReason]:
        """The reasons received since the last call, clearing the event."""
        reasons, self.reasons = self.reasons, set()
        self.event.clear()
        return reasons

    def stop(self) -> None:
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


class WakeRelay:
    """The supervisor's side: a thread that receives on ``wake.sock`` and sends each datagram on
    to the sockets ``targets()`` names now (the workers alive; one that is not listening misses
    it and finds the work at its start or its next poll)."""

    def __init__(self, state_dir: Path, targets: Callable[[], list[Path]]) -> None:
        self.path = state_dir / SOCKET_NAME
        self._targets = targets
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        """Bind and relay from a thread; False (workers poll) when the path is too long."""
        sock = _bind(self.path, blocking=True)
        if sock is None:
            return False
        self._sock = sock
        self._thread = threading.Thread(target=self._relay, args=(sock,), name="swarmd-wake-relay", daemon=True)
        self._thread.start()
        return True

    def _relay(self, sock: socket.socket) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as out:
            out.setblocking(False)
            while True:
                try:
                    data = sock.recv(64)
                except OSError:
                    return  # closed by stop()
                if not data:
                    return  # stop()'s own empty datagram
                for target in self._targets():
                    with contextlib.suppress(OSError):  # not listening, or its buffer is full
                        out.sendto(data, os.fsencode(target))

    def stop(self) -> None:
        sock, thread = self._sock, self._thread
        self._sock = self._thread = None
        if sock is None:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as poke, contextlib.suppress(OSError):
            poke.sendto(b"", os.fsencode(self.path))  # ends the blocking recv
        if thread is not None:
            thread.join(5.0)
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
