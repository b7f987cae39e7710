"""Without the redis extra installed, `--backend redis` says what to install and exits 2,
for the daemon and for producers alike (a Python with `redis` unimportable stands in for an
install without the extra)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from support.harness import base_env

NO_REDIS = "import sys; sys.modules['redis'] = None; from swarmd.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "--backend", "redis", "--metrics-listen", "127.0.0.1:0"],
        ["submit", "--backend", "redis", "--agent", "echo", "--gid", "G1"],
        ["jobs", "--backend", "redis"],
    ],
)
def test_backend_redis_without_the_extra_names_the_install_command(args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", NO_REDIS, *args], capture_output=True, text=True, env=base_env(), timeout=60, check=False
    )
    assert result.returncode == 2, result.stderr
    assert "pip install 'swarmd[redis]'" in result.stderr
    assert "Traceback" not in result.stderr
