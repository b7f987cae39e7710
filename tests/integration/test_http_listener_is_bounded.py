"""The HTTP listener under load from scrapers and idle sockets: a deep listen backlog, a bounded
number of connection threads, and HEAD answered on every path."""

from __future__ import annotations

import http.client
import select
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter
from support.services import require_tool

from swarmd.runtime.httpserver import LISTEN_BACKLOG, MAX_CONNECTIONS, HttpServer


@pytest.fixture
def server() -> Iterator[HttpServer]:
    registry = CollectorRegistry()
    Counter("swarmd_test_things", "Things.", registry=registry).inc(3)
    srv = HttpServer("127.0.0.1", 0, registry, health=lambda: (True, ""), ready=lambda: (True, ""), poll_interval=0.01)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _wait(predicate: object, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_the_listen_backlog_holds_a_burst_of_scrapers(server: HttpServer) -> None:
    require_tool("ss")
    out = subprocess.run(["ss", "-Hltn", f"sport = :{server.port}"], capture_output=True, text=True, check=True).stdout
    send_q = int(out.split()[2])  # for a listening socket, Send-Q is its backlog
    assert send_q >= LISTEN_BACKLOG > 5


def test_idle_sockets_cannot_make_a_thread_each_and_the_listener_recovers(server: HttpServer) -> None:
    before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(MAX_CONNECTIONS * 3)]
    try:
        # Every socket past the limit is closed by the server at once (EOF on our side).
        def refused() -> int:
            readable, _, _ = select.select(idle, [], [], 0)
            return sum(1 for sock in readable if sock.recv(1, socket.MSG_PEEK) == b"")

        _wait(lambda: refused() >= len(idle) - MAX_CONNECTIONS, "the sockets past the limit to be closed")
        assert threading.active_count() <= before + MAX_CONNECTIONS
    finally:
        for sock in idle:
            sock.close()

    def healthy() -> bool:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            connection.request("GET", "/healthz")
            return connection.getresponse().status == 200
        except OSError:
            return False

    _wait(healthy, "/healthz to answer once the idle sockets are gone")


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/readyz"])
def test_head_answers_like_get_without_a_body(server: HttpServer, path: str) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    connection.request("GET", path)
    get = connection.getresponse()
    body = get.read()
    connection.request("HEAD", path)
    head = connection.getresponse()
    assert head.status == get.status == 200
    assert head.getheader("Content-Type") == get.getheader("Content-Type")
    assert int(head.getheader("Content-Length") or -1) == len(body) > 0
    assert head.read() == b""
