"""The link between the supervisor and one worker process (``workers`` > 1).

The supervisor starts each worker as ``python -m swarmd.runtime.worker_process`` with:

- `WorkerSpec` in the environment variable `SPEC_ENV` (JSON): its index, the settings the
  supervisor loaded and checked, the config path and flags to reload from on SIGHUP, and the
  file descriptor of its end of the control socket. The environment, not the command line:
  settings may hold a Redis password, and ``/proc/PID/environ`` is readable by the user only.
- a ``SOCK_SEQPACKET`` socket pair, the *control socket*: messages keep their boundaries, and
  when the supervisor dies, however it dies, the worker reads end-of-file at once.

Messages (msgspec JSON), worker to supervisor: `Beat` every `BEAT_SECONDS` while the worker's
event loop turns (``ready`` says whether it would answer /readyz with 200, and if not why), and
`Committed` with the ids of the jobs a commit recorded; supervisor to worker: `Committed` of the
other workers, for the waiters of the worker that serves the API socket, and `CrashesChanged`
when a worker died of a crash (its record in ``crashes.json`` may name a job the others should
now hold back as a suspect or dead-letter as poison: swarmd.runtime.crashes).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import msgspec

from swarmd.config import Settings

__all__ = [
    "BEAT_SECONDS",
    "SPEC_ENV",
    "Beat",
    "Committed",
    "CrashesChanged",
    "SupervisorLink",
    "WorkerSpec",
    "decode_message",
    "die_with_parent",
    "encode_message",
    "metrics_socket",
]

#: The environment variable that carries a worker's `WorkerSpec`.
SPEC_ENV: Final = "SWARMD_WORKER"
#: Seconds between two beats of a worker (its loop turning).
BEAT_SECONDS: Final = 0.25
#: Largest control message read (a Committed of a whole commit batch fits).
MAX_MESSAGE: Final = 1 << 20
_PR_SET_PDEATHSIG: Final = 1


class WorkerSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What a worker process needs to start."""

    index: int
    settings: dict[str, Any]
    config_path: str | None
    flags: dict[str, Any]
    control_fd: int
    supervisor_pid: int
    #: Return every lease at start (Redis: this worker's own and expired ones), or only expired
    #: leases of other owners (SQLite: the supervisor returned all of them before any worker ran).
    recover_all_leases: bool

    def load_settings(self) -> Settings:
        return msgspec.convert(self.settings, Settings)


class Beat(msgspec.Struct, tag="beat", frozen=True):
    ready: bool
    reason: str = ""


class Committed(msgspec.Struct, tag="committed", frozen=True):
    ids: list[str]


class CrashesChanged(msgspec.Struct, tag="crashes", frozen=True):
    pass


Message = Beat | Committed | CrashesChanged
_decoder: Final = msgspec.json.Decoder(Message)
_encoder: Final = msgspec.json.Encoder()


def encode_message(message: Message) -> bytes:
    return _encoder.encode(message)


def decode_message(data: bytes) -> Message:
    return _decoder.decode(data)


def metrics_socket(state_dir: Path, index: int) -> Path:
    """Where worker ``index`` serves its metrics (OpenMetrics text) to the supervisor."""
    return state_dir / f"metrics-w{index}.sock"


def die_with_parent(supervisor_pid: int) -> bool:
    """Have the kernel SIGKILL this process when its parent (the supervisor) dies; if it has
    died already, exit now. False where prctl is unavailable (the control socket's end-of-file
    still stops the worker)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        armed = bool(libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        armed = False
    if os.getppid() != supervisor_pid:  # it died before the prctl: no signal will come
        os._exit(1)
    return armed


class SupervisorLink:
    """A worker's end of the control socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.setblocking(False)
        self.lost = asyncio.Event()

    @classmethod
    def from_fd(cls, fd: int) -> SupervisorLink:
        return cls(socket.socket(fileno=fd))

    def start(self, on_committed: Callable[[list[str]], None], on_crashes: Callable[[], None]) -> None:
        """Read the supervisor's messages on the running loop; set `lost` at end-of-file."""
        loop = asyncio.get_running_loop()

        def readable() -> None:
            while True:
                try:
                    data = self.sock.recv(MAX_MESSAGE)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    data = b""
                if not data:
                    loop.remove_reader(self.sock.fileno())
                    self.lost.set()
                    return
                with contextlib.suppress(msgspec.DecodeError):
                    message = decode_message(data)
                    if isinstance(message, Committed):
                        on_committed(message.ids)
                    elif isinstance(message, CrashesChanged):
                        on_crashes()

        loop.add_reader(self.sock.fileno(), readable)

    def send(self, message: Message) -> None:
        """Send without blocking; a message the full socket cannot take is dropped (a beat is
        sent again soon; a lost Committed costs a waiter its backstop interval)."""
        with contextlib.suppress(OSError):
            self.sock.send(encode_message(message))

    def beat(self, ready: bool, reason: str = "") -> None:
        self.send(Beat(ready, reason))

    def committed(self, ids: list[str]) -> None:
        if ids:
            self.send(Committed(ids))
