"""Waking an idle daemon the moment work arrives, without polling.

The daemon binds a datagram socket in its state directory; a producer that has committed
jobs sends it one byte. A lost wake-up costs at most the daemon's idle poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
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


class WakeListener:
    """The daemon's side: sets `event` whenever a datagram arrives; `reasons` collects them."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / SOCKET_NAME
        self.event = asyncio.Event()
        self.reasons: set[WakeReason] = set()
        self._sock: socket.socket | None = None

    def start(self) -> bool:
        """Bind and listen; False (polling only) when the path is too long for AF_UNIX."""
        if len(os.fsencode(self.path)) > _MAX_PATH:
            return False
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind(os.fsencode(self.path))
        os.chmod(self.path, 0o600)
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
