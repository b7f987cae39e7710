"""A `swarmd serve` subprocess on this machine, for `swarmd demo` and `swarmd bench`."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from prometheus_client.parser import text_string_to_metric_families


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], object], timeout: float, what: str, step: float = 0.005) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(step)


def serve_command(state_dir: Path, port: int, *args: str) -> list[str]:
    """The command line of `swarmd serve` on ``state_dir``, listening on 127.0.0.1:``port``."""
    return [
        sys.executable, "-m", "swarmd", "serve", "--state-dir", str(state_dir),
        "--metrics-listen", f"127.0.0.1:{port}", *args,
    ]  # fmt: skip


class LocalDaemon:
    """Starts `swarmd serve` on ``state_dir`` and a free loopback port; stops it with SIGTERM."""

    def __init__(self, state_dir: Path, args: Sequence[str] = (), env: dict[str, str] | None = None) -> None:
        self.state_dir = state_dir
        self.port = free_port()
        self.args = list(args)
        self.env = {**os.environ, "OTEL_TRACES_EXPORTER": os.environ.get("OTEL_TRACES_EXPORTER", "none"), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> Self:
        # The daemon's own log goes beside its state directory, never into this process's output.
        self.log_path = self.state_dir.parent / f"{self.state_dir.name}-daemon.log"
        self.state_dir.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                serve_command(self.state_dir, self.port, "--log-level", "warning", *self.args),
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(lambda: self.ready() or self.proc is None or self.proc.poll() is not None, timeout, "the daemon")
        if self.proc.poll() is not None:
            raise RuntimeError(f"the daemon exited with {self.proc.returncode} before it was ready")
        return self

    def get(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
            return str(response.read().decode())

    def ready(self) -> bool:
        try:
            self.get("/readyz")
        except OSError:
            return False
        return True

    def metrics(self) -> dict[str, float]:
        """Unlabelled samples by name, plus labelled ones summed under their name."""
        values: dict[str, float] = {}
        for family in text_string_to_metric_families(self.get("/metrics")):
            for sample in family.samples:
                values[sample.name] = values.get(sample.name, 0.0) + sample.value
        return values

    def rss_bytes(self, field: str = "VmRSS") -> int:
        """Resident memory of the daemon (``VmHWM`` for the peak)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"{field} not found")

    def cpu_seconds(self) -> float:
        """CPU time the daemon's threads have used so far: the nanosecond counters of its live
        threads (``/proc/PID/task/*/schedstat``), or, where the kernel keeps none, user + system
        time of the whole process from ``/proc/PID/stat``, in 10 ms clock ticks. One daemon is
        always read the same way. A thread that ends takes its time out of the first kind: a
        drain's threads (the loop's and the SQLite thread) live as long as the daemon."""
        if Path(f"/proc/{self.pid}/schedstat").exists():
            total = 0
            for task in Path(f"/proc/{self.pid}/task").iterdir():
                with contextlib.suppress(OSError, ValueError, IndexError):  # a thread that just ended
                    total += int((task / "schedstat").read_text().split()[0])
            return total / 1e9
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
