"""A stand-in for systemd's notify socket, for tests of READY=1 / WATCHDOG=1 / STOPPING=1."""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path


class NotifySocket:
    """A real AF_UNIX datagram socket standing in for systemd's; records (time, line)."""

    def __init__(self) -> None:
        # AF_UNIX paths are short (108 bytes): not under pytest's long tmp_path.
        self.directory = Path(tempfile.mkdtemp(prefix="swarmd-notify-", dir="/tmp"))
        self.path = self.directory / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.1)
        self.lines: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="notify", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                message = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.monotonic()
            self.lines.extend((now, line) for line in message.split("\n") if line)

    def pings(self) -> list[float]:
        return [at for at, line in list(self.lines) if line == "WATCHDOG=1"]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()
        shutil.rmtree(self.directory, ignore_errors=True)


@contextlib.contextmanager
def notify_socket() -> Iterator[NotifySocket]:
    listener = NotifySocket()
    try:
        yield listener
    finally:
        listener.close()
