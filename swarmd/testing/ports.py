"""Loopback ports for the daemons, Redis and Prometheus servers the tests and the bench start.

A port is chosen here, then bound by another process a moment later (a daemon that is still
importing Python). Two things can take it in between: another test process choosing at the
same time (pytest-xdist runs several), and the kernel handing it out as the source port of an
outgoing connection. So ports come from below the kernel's ephemeral range (never a source
port), each pytest-xdist worker has a slice of its own (``PYTEST_XDIST_WORKER=gwN`` of
``PYTEST_XDIST_WORKER_COUNT``), and one process walks its slice from a random start so that it
hands out no port twice until it has used the whole slice.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Final

#: The lowest port handed out: above the well-known and most registered service ports.
LOWEST: Final = 10000
#: Where the kernel's ephemeral (source) ports start when /proc does not say.
EPHEMERAL_START: Final = 32768
#: /proc file naming the kernel's ephemeral port range ("32768\t60999").
EPHEMERAL_RANGE: Final = Path("/proc/sys/net/ipv4/ip_local_port_range")


class NoFreePort(RuntimeError):
    """Every port of this process's slice was taken."""


def ephemeral_start() -> int:
    """The first port the kernel may give an outgoing connection."""
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return EPHEMERAL_START


def port_slice(environ: Mapping[str, str], top: int) -> range:
    """The ports of this process: [LOWEST, top) split evenly between pytest-xdist workers,
    the whole of it outside pytest-xdist."""
    worker, count = environ.get("PYTEST_XDIST_WORKER", ""), environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if not (worker.startswith("gw") and worker[2:].isdigit() and count.isdigit() and int(count) > 0):
        return range(LOWEST, top)
    index, total = int(worker[2:]), int(count)
    width = (top - LOWEST) // total
    start = LOWEST + (index % total) * width
    return range(start, start + width)


def _walk(ports: range) -> Iterator[int]:
    start = random.randrange(len(ports))
    return itertools.cycle([*ports[start:], *ports[:start]])


_ports: Iterator[int] | None = None


def first_free(candidates: Iterable[int]) -> int:
    """The first of ``candidates`` that a socket can bind on 127.0.0.1 right now."""
    for port in candidates:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise NoFreePort("no free port on 127.0.0.1 among the candidates of this process's slice")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, from this process's slice,
    not handed out by this process since it last went round its slice."""
    global _ports  # noqa: PLW0603 - one walk per process
    if _ports is None:
        top = min(ephemeral_start(), 65536)
        _ports = _walk(port_slice(os.environ, top if top > LOWEST else EPHEMERAL_START))
    return first_free(itertools.islice(_ports, 1000))
