"""Every worker's metrics on the supervisor's ``/metrics``, each series labelled ``worker``.

prometheus-client's multiprocess mode is not used: it drops exemplars, the process metrics and
callback gauges (in flight, peak, ready), and needs its own histogram sums. Instead each worker
serves its whole registry, as OpenMetrics text (which carries exemplars), on a unix socket in
the state directory (`MetricsExporter`: a thread answers each connection with one exposition
and closes it); at each scrape the supervisor reads every worker's text, parses it with
prometheus-client's own OpenMetrics parser and re-exposes every family once, each sample with
a ``worker="<index>"`` label added (`WorkersCollector`). No sample is computed here: sums across
workers are PromQL's ``sum without (worker)`` (docs/design/workers.md says, per metric, how).

A worker that is down, or does not answer within `SCRAPE_TIMEOUT`, is left out of that scrape
(its series go stale, and ``swarmd_workers_running`` says how many answer).
"""

from __future__ import annotations

import contextlib
import os
import socket
import socketserver
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Final

from prometheus_client.core import Metric
from prometheus_client.openmetrics.exposition import generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Sample

__all__ = ["SCRAPE_TIMEOUT", "MetricsExporter", "WorkersCollector", "relabel", "scrape"]

#: Seconds the supervisor waits for one worker's exposition.
SCRAPE_TIMEOUT: Final = 5.0
#: Largest exposition read from one worker, in bytes.
MAX_EXPOSITION: Final = 64 * 1024 * 1024
WORKER_LABEL: Final = "worker"


class MetricsExporter:
    """A worker's side: serves ``registry`` on the unix socket ``path`` from a thread."""

    def __init__(self, registry: CollectorRegistry, path: Path) -> None:
        self.path = path
        self._registry = registry
        self._server: socketserver.UnixStreamServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        registry = self._registry

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with contextlib.suppress(OSError):
                    self.request.sendall(generate_latest(registry))  # type: ignore[no-untyped-call]  # untyped upstream

        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        server = socketserver.UnixStreamServer(os.fspath(self.path), Handler)
        os.chmod(self.path, 0o600)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.5}, name="swarmd-metrics-export", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def scrape(path: Path, timeout: float = SCRAPE_TIMEOUT) -> str | None:
    """One worker's exposition, or None if it does not answer (down, starting, stuck)."""
    chunks: list[bytes] = []
    size = 0
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(os.fspath(path))
            while chunk := sock.recv(1 << 16):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_EXPOSITION:
                    return None
    except OSError:
        return None
    text = b"".join(chunks).decode("utf-8", errors="replace")
    return text if text.endswith("# EOF\n") else None  # cut short: not a whole exposition


def relabel(texts: Iterable[tuple[str, str]]) -> list[Metric]:
    """Families of the (worker label, OpenMetrics text) pairs, merged by name, each sample
    with ``worker`` added; exemplars and timestamps kept as they are."""
    merged: dict[str, Metric] = {}
    for worker, text in texts:
        for family in text_string_to_metric_families(text):  # type: ignore[no-untyped-call]
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
            into.samples.extend(
                Sample(
                    sample.name,
                    {**sample.labels, WORKER_LABEL: worker},
                    sample.value,
                    sample.timestamp,
                    sample.exemplar,
                    sample.native_histogram,
                )
                for sample in family.samples
            )
    return list(merged.values())


class WorkersCollector(Collector):
    """The supervisor's side: at each collect, every worker ``sockets()`` names (worker label
    -> socket path) scraped and relabelled."""

    def __init__(self, sockets: Callable[[], dict[str, Path]], timeout: float = SCRAPE_TIMEOUT) -> None:
        self._sockets = sockets
        self._timeout = timeout
        #: How many workers answered the last scrape.
        self.answered = 0

    def describe(self) -> Iterable[Metric]:
        return []  # nothing to check at registration: the families come from the workers

    def collect(self) -> Iterator[Metric]:
        texts = [(worker, scrape(path, self._timeout)) for worker, path in sorted(self._sockets().items())]
        answered = [(worker, text) for worker, text in texts if text is not None]
        self.answered = len(answered)
        yield from relabel(answered)
