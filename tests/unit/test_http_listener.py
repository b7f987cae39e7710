"""swarmd.httpserver: /metrics, /healthz, /readyz, 404, bind errors."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter

from swarmd.runtime.httpserver import HttpServer, ListenError


class State:
    """What the event loop would cache for the server thread to read."""

    def __init__(self) -> None:
        self.healthy = (True, "")
        self.ready = (False, "queue not open yet")


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("swarmd_test_things", "Things.", registry=registry).inc(3)
    return registry


@pytest.fixture
def state() -> State:
    return State()


@pytest.fixture
def server(registry: CollectorRegistry, state: State) -> Iterator[HttpServer]:
    srv = HttpServer(
        "127.0.0.1",
        0,
        registry,
        health=lambda: state.healthy,
        ready=lambda: state.ready,
        poll_interval=0.01,
    )
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def get(server: HttpServer, path: str, method: str = "GET") -> tuple[int, str]:
    request = urllib.request.Request(f"http://{server.address}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read().decode()


def test_port_zero_binds_a_free_port(server: HttpServer) -> None:
    assert server.port != 0
    assert server.address == f"127.0.0.1:{server.port}"


def test_metrics(server: HttpServer) -> None:
    status, body = get(server, "/metrics")
    assert status == 200
    assert "swarmd_test_things_total 3.0" in body.splitlines()


def test_healthz_follows_the_callback(server: HttpServer, state: State) -> None:
    assert get(server, "/healthz") == (200, "ok\n")
    state.healthy = (False, "event loop stalled for 3.2s")
    assert get(server, "/healthz") == (503, "event loop stalled for 3.2s\n")
    state.healthy = (True, "")
    assert get(server, "/healthz") == (200, "ok\n")


def test_readyz_follows_the_callback(server: HttpServer, state: State) -> None:
    assert get(server, "/readyz") == (503, "queue not open yet\n")
    state.ready = (True, "")
    assert get(server, "/readyz") == (200, "ok\n")
    state.ready = (False, "draining")
    assert get(server, "/readyz") == (503, "draining\n")


def test_a_failing_callback_is_a_503(registry: CollectorRegistry) -> None:
    def broken() -> tuple[bool, str]:
        raise RuntimeError("no state yet")

    with HttpServer("127.0.0.1", 0, registry, health=broken, ready=broken, poll_interval=0.01) as srv:
        assert get(srv, "/healthz") == (503, "RuntimeError: no state yet\n")


@pytest.mark.parametrize("path", ["/", "/metricsx", "/healthz/", "/nope", "/readyz/extra"])
def test_other_paths_are_404(server: HttpServer, path: str) -> None:
    status, _ = get(server, path)
    assert status == 404


def test_health_refuses_post(server: HttpServer) -> None:
    assert get(server, "/healthz", method="POST")[0] == 405


def test_address_in_use_raises_listen_error_naming_it(registry: CollectorRegistry) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        srv = HttpServer("127.0.0.1", port, registry, health=lambda: (True, ""), ready=lambda: (True, ""))
        with pytest.raises(ListenError) as info:
            srv.start()
    assert isinstance(info.value, OSError)
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "in use" in str(info.value)
    assert (info.value.host, info.value.port) == ("127.0.0.1", port)


def test_second_server_on_the_same_port(server: HttpServer, registry: CollectorRegistry) -> None:
    other = HttpServer("127.0.0.1", server.port, registry, health=lambda: (True, ""), ready=lambda: (True, ""))
    with pytest.raises(ListenError, match=f"127.0.0.1:{server.port}"):
        other.start()
    assert get(server, "/healthz") == (200, "ok\n")  # the first one is unharmed


@pytest.mark.parametrize(
    ("host", "port"),
    [("203.0.113.7", 0), ("no-such-host.invalid", 9464), ("127.0.0.1", 70000)],
)
def test_unbindable_address_raises_listen_error(registry: CollectorRegistry, host: str, port: int) -> None:
    srv = HttpServer(host, port, registry, health=lambda: (True, ""), ready=lambda: (True, ""))
    with pytest.raises(ListenError, match=f"cannot listen on {host}:{port}"):
        srv.start()


def test_stop_closes_the_socket_and_is_idempotent(registry: CollectorRegistry) -> None:
    srv = HttpServer(
        "127.0.0.1", 0, registry, health=lambda: (True, ""), ready=lambda: (True, ""),
        poll_interval=0.01,
    )  # fmt: skip
    srv.start()
    port = srv.port
    srv.stop()
    srv.stop()
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", port))
