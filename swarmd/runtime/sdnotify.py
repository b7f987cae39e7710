"""The systemd notify protocol, without dependencies (``READY=1``, ``WATCHDOG=1``, ...).

Outside systemd (no ``$NOTIFY_SOCKET``) every call does nothing and returns False.
See sd_notify(3): https://www.freedesktop.org/software/systemd/man/latest/sd_notify.html

This module imports nothing from swarmd.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

__all__ = ["notify", "watchdog_interval"]


def notify(message: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Send ``message`` (e.g. ``"READY=1"``) to ``$NOTIFY_SOCKET``; True if it was sent.

    Supports filesystem paths and abstract names (``@name``). Never raises and never blocks:
    without the variable, with an unsupported address, a missing socket or a full queue it
    returns False, so it is safe to call from the event loop.
    """
    address = environ.get("NOTIFY_SOCKET", "")
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.connect(address)
            sock.sendall(message.encode())
    except (OSError, ValueError):  # ValueError: a NUL inside a path
        return False
    return True


def watchdog_interval(environ: Mapping[str, str] = os.environ) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``$WATCHDOG_USEC``), or None.

    None when the watchdog is off: ``$WATCHDOG_USEC`` unset, not a positive integer, or
    ``$WATCHDOG_PID`` set to another process's pid.
    """
    pid = environ.get("WATCHDOG_PID", "")
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 2_000_000
