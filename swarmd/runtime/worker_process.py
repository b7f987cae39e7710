"""A worker process of a supervisor: ``python -m swarmd.runtime.worker_process``.

Started by swarmd.runtime.supervisor only, with its `WorkerSpec` in ``$SWARMD_WORKER``. It arms
PR_SET_PDEATHSIG (the kernel kills it if the supervisor dies), then runs a `Daemon` in the role
of that worker until SIGTERM drains it; its exit code is the daemon's (1: a crash, which the
supervisor answers with a restart after a backoff).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import msgspec
import structlog

from swarmd.errors import ConfigError, StateDirError, SwarmdError, TracingConfigError
from swarmd.runtime.daemon import SWITCH_INTERVAL, Daemon, WorkerRole, run_daemon
from swarmd.runtime.worker_link import SPEC_ENV, SupervisorLink, WorkerSpec, die_with_parent
from swarmd.telemetry.logs import configure_logging


def main() -> int:
    raw = os.environ.pop(SPEC_ENV, None)
    if raw is None:
        print(f"swarmd: error: {__name__} is started by `swarmd serve --workers N`, not by hand", file=sys.stderr)
        return 2
    spec = msgspec.json.decode(raw, type=WorkerSpec)
    armed = die_with_parent(spec.supervisor_pid)
    settings = spec.load_settings()
    sys.setswitchinterval(SWITCH_INTERVAL)
    configure_logging(
        settings.log_level.value, json={"auto": None, "json": True, "console": False}[settings.log_format]
    )
    structlog.contextvars.bind_contextvars(worker=spec.index)
    if not armed:
        structlog.get_logger("swarmd.daemon").warning(
            "pdeathsig_unavailable", fallback="exit when the control socket closes"
        )
    role = WorkerRole(spec.index, SupervisorLink.from_fd(spec.control_fd), spec.recover_all_leases)
    config_path = Path(spec.config_path) if spec.config_path is not None else None
    try:
        return run_daemon(Daemon(settings, config_path=config_path, flags=spec.flags, role=role))
    except SwarmdError as exc:  # as `swarmd serve` would say it: one line, exit 2 for bad input
        print(f"swarmd: error: worker {spec.index}: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, (ConfigError, StateDirError, TracingConfigError)) else 1


if __name__ == "__main__":
    sys.exit(main())
