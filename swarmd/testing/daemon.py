"""A `swarmd serve` subprocess on this machine: the one daemon helper of the tests, the bench
and `swarmd demo`.

It starts the real command line on a state directory and a loopback port, waits for the
daemon to report ready, and stops it the way an operator would (SIGTERM, with a bound), or
kills it; it reads what the daemon shows from outside: its HTTP listener, its metrics, its
log, and its memory and CPU time from ``/proc``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from prometheus_client.parser import text_string_to_metric_families

from swarmd.testing.polling import wait_until
from swarmd.testing.ports import free_port

__all__ = ["DaemonError", "LocalDaemon", "free_port", "inherited_env", "serve_command"]

#: Seconds to wait for a start, a stop or an exit unless the caller says otherwise.
DEFAULT_TIMEOUT: Final = 60.0
#: Pause between two readiness probes while the daemon starts.
READY_STEP: Final = 0.01


class DaemonError(RuntimeError):
    """The daemon did not do what its helper needed: it was not started, it exited before it
    reported ready, or its ``/metrics`` did not answer 200."""


def serve_command(state_dir: Path, port: int, *args: str) -> list[str]:
    """The command line of `swarmd serve` on ``state_dir``, listening on 127.0.0.1:``port``."""
    return [
        sys.executable, "-m", "swarmd", "serve", "--state-dir", str(state_dir),
        "--metrics-listen", f"127.0.0.1:{port}", *args,
    ]  # fmt: skip


def inherited_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment with tracing export off unless it names an exporter, and
    ``extra`` on top."""
    return {**os.environ, "OTEL_TRACES_EXPORTER": os.environ.get("OTEL_TRACES_EXPORTER", "none"), **(extra or {})}


class LocalDaemon:
    """One `swarmd serve` process on ``state_dir``, listening on 127.0.0.1:``port`` (default: a
    free port), started by `start` or by entering it as a context manager.

    ``args`` go on its command line after ``--log-level log_level`` (when given), ``env`` into
    its environment on top of `environment`'s; both are read at each `start`, so a restart may
    change them. It runs in the working directory ``cwd`` (default: this process's). Its output
    goes to `log_path` beside the state directory, never into this process's output; a restart
    appends to it.
    """

    def __init__(
        self,
        state_dir: Path,
        *args: str,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        log_level: str | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.cwd = cwd
        self.port = port or free_port()
        self.args = list(args)
        self.env = dict(env or {})
        self.log_level = log_level
        self.log_path = state_dir.parent / f"{state_dir.name}-daemon-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # -- starting ------------------------------------------------------------------------------
    def environment(self) -> dict[str, str]:
        """The daemon's environment: `inherited_env` with `env` on top. The test harness
        overrides it to leave out this process's own swarmd settings."""
        return inherited_env(self.env)

    def command(self) -> list[str]:
        """The daemon's command line."""
        level = ["--log-level", self.log_level] if self.log_level else []
        return serve_command(self.state_dir, self.port, *level, *self.args)

    def start(self, *, wait_ready: bool = True, timeout: float = DEFAULT_TIMEOUT) -> Self:
        """Start the process and, unless ``wait_ready`` is false, `wait_ready`."""
        self.starts += 1
        self.state_dir.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env=self.environment(), cwd=self.cwd
            )
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until ``/readyz`` answers 200; `DaemonError` (with the log) if the process ends
        first, `swarmd.testing.polling.WaitTimeout` if ``timeout`` seconds pass."""

        def ready() -> bool:
            proc = self._process()
            if proc.poll() is not None:
                raise DaemonError(f"the daemon exited with {proc.returncode} before it was ready:\n{self.log()}")
            return self.get("/readyz", timeout=1.0)[0] == 200

        wait_until(ready, timeout=timeout, what="the daemon to report ready", step=READY_STEP)

    # -- the process ---------------------------------------------------------------------------
    def _process(self) -> subprocess.Popen[bytes]:
        if self.proc is None:
            raise DaemonError("the daemon has not been started")
        return self.proc

    @property
    def pid(self) -> int:
        return self._process().pid

    def signal(self, signum: int) -> None:
        """Send ``signum`` (SIGHUP, SIGTERM, ...) to the daemon."""
        self._process().send_signal(signum)

    def wait(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """Wait for the daemon to exit by itself; its exit code."""
        return self._process().wait(timeout)

    def stop(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """Stop the daemon as an operator would, with SIGTERM (a drain), and return its exit
        code; one that has not exited ``timeout`` seconds later is killed (SIGKILL: the code is
        then -9). 0 if it was never started; its code if it had already exited."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill9(self) -> None:
        """Kill the daemon with SIGKILL, as a crash would, and wait for it to be gone."""
        proc = self._process()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def ensure_dead(self) -> None:
        """Kill the daemon if it is still running (a cleanup that never waits for a drain)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- what it shows -------------------------------------------------------------------------
    def log(self) -> str:
        """Everything the daemon has written so far, over all its starts."""
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        """(HTTP status, body) of ``GET path`` on the daemon's listener; (0, "") when nothing
        answered within ``timeout`` seconds."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode()
        except OSError:
            return 0, ""

    def _metrics_text(self) -> str:
        status, text = self.get("/metrics")
        if status != 200:
            raise DaemonError(f"/metrics answered {status}")
        return text

    def metrics(self) -> dict[str, float]:
        """Every sample of ``/metrics``, keyed ``name{label="v",...}`` (labels sorted), or plain
        ``name`` when it has no labels."""
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(self._metrics_text()):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return samples

    def metric_totals(self) -> dict[str, float]:
        """Every sample name of ``/metrics`` with the sum of its values over all labels."""
        totals: dict[str, float] = {}
        for family in text_string_to_metric_families(self._metrics_text()):
            for sample in family.samples:
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
        return totals

    def rss_bytes(self, field: str = "VmRSS") -> int:
        """Resident memory of the daemon (``VmHWM`` for the peak)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise DaemonError(f"{field} not found")

    def cpu_seconds(self) -> float:
        """CPU time the daemon's threads have used so far, its worker processes' included
        (``--workers N``): the nanosecond counters of their live threads
        (``/proc/PID/task/*/schedstat``), or, where the kernel keeps none, user + system time of
        each whole process from ``/proc/PID/stat``, in 10 ms clock ticks. One daemon is always
        read the same way. A thread that ends takes its time out of the first kind: a drain's
        threads (the loop's and the SQLite thread) live as long as the daemon."""
        return sum(_process_cpu_seconds(pid) for pid in [self.pid, *_descendants(self.pid)])


def _descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (a supervisor's workers), from ``/proc/PID/task/*/children``."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError):
                for child in (task / "children").read_text().split():
                    found += [int(child), *_descendants(int(child))]
    return found


def _process_cpu_seconds(pid: int) -> float:
    try:
        if Path(f"/proc/{pid}/schedstat").exists():
            total = 0
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError, ValueError, IndexError):  # a thread that just ended
                    total += int((task / "schedstat").read_text().split()[0])
            return total / 1e9
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # a worker that just exited
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
