"""Helpers for the API socket's tests: a throw-away group, a directory other users may enter,
the real CLI run as another user, and a raw protocol client that sends exactly what it is given."""

from __future__ import annotations

import contextlib
import grp
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from support.harness import base_env
from support.services import require_tool
from swarmd.api.protocol import HEADER, VERSION, Op, Request, Response, decode_response, encode, frame

#: The user producers run as in these tests (``nobody`` on Debian).
NOBODY: tuple[int, int] = (65534, 65534)


def require_root() -> None:
    """Skip unless this process may switch users and create groups (fail under SWARMD_TEST_STRICT)."""
    require_tool("setpriv")
    require_tool("groupadd")
    if os.geteuid() != 0:
        if os.environ.get("SWARMD_TEST_STRICT") == "1":
            pytest.fail("these tests switch users: run them as root (SWARMD_TEST_STRICT=1)")
        pytest.skip("these tests switch users: they need root")


@contextlib.contextmanager
def throwaway_group() -> Iterator[tuple[str, int]]:
    """A new system group (name, gid), deleted afterwards."""
    name = f"swt-{uuid.uuid4().hex[:10]}"
    subprocess.run(["groupadd", "--system", name], check=True, capture_output=True)
    try:
        yield name, grp.getgrnam(name).gr_gid
    finally:
        subprocess.run(["groupdel", name], check=False, capture_output=True)


@contextlib.contextmanager
def open_directory() -> Iterator[Path]:
    """A directory every user may enter (0755), for the socket; removed afterwards (pytest's
    tmp_path is 0700, closed to other users)."""
    path = Path(tempfile.mkdtemp(prefix="swarmd-api-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def swarmd_as(
    user: tuple[int, int], groups: list[int], *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The real CLI, run as ``user`` (uid, gid) with exactly ``groups`` as its supplementary groups."""
    uid, gid = user
    groups_arg = ["--groups=" + ",".join(map(str, groups))] if groups else ["--clear-groups"]
    command = ["setpriv", f"--reuid={uid}", f"--regid={gid}", *groups_arg, sys.executable, "-m", "swarmd", *args]
    environment = base_env({"HOME": "/nonexistent", "XDG_STATE_HOME": "/nonexistent", **(env or {})})
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=60, check=False)


def files_owned_by(directory: Path, uid: int) -> list[Path]:
    """Every file under ``directory`` that belongs to ``uid``."""
    return [path for path in directory.rglob("*") if path.lstat().st_uid == uid]


class RawClient:
    """A blocking connection to an API socket that sends exactly what it is given."""

    def __init__(self, path: Path | None, timeout: float = 30.0, *, sock: socket.socket | None = None) -> None:
        """Connect to ``path``, or use the connected ``sock``."""
        if sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(str(path))
        self.sock = sock
        self._ids = 0

    def close(self) -> None:
        self.sock.close()

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_response(self) -> Response | None:
        """The next response, or None if the daemon closed the connection."""
        header = self._read(HEADER.size)
        if header is None:
            return None
        (length,) = HEADER.unpack(header)
        body = self._read(length)
        return None if body is None else decode_response(body)

    def _read(self, n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def call(self, op: Op | str, args: Any) -> Response:
        """Send one request (``args`` encoded as given, valid or not) and read its response."""
        self._ids += 1
        self.send_bytes(frame(Request(VERSION, self._ids, Op(op), msgspec.Raw(encode(args)))))
        response = self.read_response()
        assert response is not None, "the daemon closed the connection"
        return response
