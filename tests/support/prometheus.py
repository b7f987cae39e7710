"""A Prometheus server started by a test, on 127.0.0.1, with its own config and storage.

``Prometheus(workdir, config, *flags).start()`` writes ``config`` (a dict, as prometheus.yml
holds it) to ``workdir``, starts the ``prometheus`` program (skipped without it, failed under
``SWARMD_TEST_STRICT=1``) with ``flags`` added, and waits until it reports ready; ``stop()``
ends the process it started, by its PID.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from support.harness import free_port, wait_until
from support.services import require_tool


class Prometheus:
    """A Prometheus server process started by this test, and its HTTP API."""

    def __init__(self, workdir: Path, config: dict[str, Any], *flags: str) -> None:
        self.flags = flags
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "prometheus.log"
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.storage = workdir / "tsdb"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Prometheus:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    require_tool("prometheus"),
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.storage}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    *self.flags,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    return int(response.status) == 200
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return False

        wait_until(ready, timeout=15, what="prometheus to report ready", step=0.1)
        return self

    def stop(self) -> None:
        """Terminate the process this object started (by its PID), then kill it if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        """Its warnings and errors (the last 20), or the tail of its log if it logged none."""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join([line for line in lines if re.search(r"level=(warn|error)", line)][-20:] or lines[-5:])

    def api(self, path: str, **params: str) -> Any:
        """``data`` of a successful API answer (an error answer fails the test)."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        assert body.get("status") == "success", f"GET {url}: {body}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query at now: its series (a scalar counts as one)."""
        data = self.api("query", query=expr)
        if data["resultType"] in {"scalar", "string"}:
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def has_data(self, expr: str) -> bool:
        """At least one series with a value other than NaN."""
        return any(series["value"][1] != "NaN" for series in self.query(expr))
