"""Payloads from the command line as a careless or hostile caller gives them: argv that is not
UTF-8, and files over the limit, get a clear error naming the problem, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from support.harness import base_env

from swarmd.model import MAX_PAYLOAD_BYTES


def _submit(state: Path, *args: str | bytes) -> subprocess.CompletedProcess[bytes]:
    argv = [os.fsencode(sys.executable), b"-m", b"swarmd", b"submit", b"--state-dir", os.fsencode(state)]
    argv += [arg if isinstance(arg, bytes) else arg.encode() for arg in args]
    return subprocess.run(argv, capture_output=True, env=base_env(), timeout=60, check=False)


def test_a_payload_argument_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    result = _submit(tmp_path / "state", "--agent", "echo", "--gid", "G1", "--payload", b'"caf\xe9"')
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert "payload: not valid UTF-8" in stderr
    assert "Traceback" not in stderr


def test_a_payload_file_over_the_limit_names_its_real_size(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_bytes(b'"' + b"x" * (3 * MAX_PAYLOAD_BYTES) + b'"')
    result = _submit(tmp_path / "state", "--agent", "echo", "--gid", "G1", "--payload-file", str(big))
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert f"{big} is {3 * MAX_PAYLOAD_BYTES + 2} bytes, over the limit of {MAX_PAYLOAD_BYTES}" in stderr
