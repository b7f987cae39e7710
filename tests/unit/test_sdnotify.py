"""swarmd.sdnotify: datagrams to a real AF_UNIX socket, and the watchdog interval."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarmd.runtime.sdnotify import notify, watchdog_interval


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)  # only a safety net: datagrams are queued before notify returns
        yield str(path), sock


def test_notify_sends_one_datagram_per_message(receiver: tuple[str, socket.socket]) -> None:
    path, sock = receiver
    env = {"NOTIFY_SOCKET": path}
    assert notify("READY=1", env) is True
    assert notify("STATUS=draining\nSTOPPING=1", env) is True
    assert sock.recv(4096) == b"READY=1"
    assert sock.recv(4096) == b"STATUS=draining\nSTOPPING=1"


def test_notify_abstract_socket() -> None:
    name = f"swarmd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert notify("WATCHDOG=1", {"NOTIFY_SOCKET": "@" + name}) is True
        assert sock.recv(4096) == b"WATCHDOG=1"


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"NOTIFY_SOCKET": ""},
        {"NOTIFY_SOCKET": "relative/path"},
        {"NOTIFY_SOCKET": "vsock:2:1234"},
        {"NOTIFY_SOCKET": "/nonexistent/dir/notify.sock"},
        {"NOTIFY_SOCKET": "/tmp/with\0nul"},
        {"NOTIFY_SOCKET": "@swarmd-test-nobody-listens-" + uuid.uuid4().hex},
    ],
)
def test_notify_without_a_usable_socket_returns_false(env: dict[str, str]) -> None:
    assert notify("READY=1", env) is False


def test_notify_to_a_socket_that_went_away(tmp_path: Path) -> None:
    path = tmp_path / "gone.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
    # The file stays, nobody listens: connection refused.
    assert notify("READY=1", {"NOTIFY_SOCKET": str(path)}) is False


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "1000"}, 0.0005),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": ""}, 15.0),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(env) == expected
