"""The API socket of a real daemon under hostile clients: fuzzed frames and arguments get only
documented errors and the daemon keeps serving; memory stays bounded under 1,000 idle
connections, of which it serves `MAX_CONNECTIONS` and refuses the rest with an error reply."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.api import RawClient
from support.harness import Daemon, wait_until
from support.strategies import msgpack_values as values

from swarmd.api.protocol import HEADER, MAX_FRAME, VERSION, Op, PingResult, Request, decode_result, encode, frame
from swarmd.runtime.api_server import MAX_CONNECTIONS, MAX_IN_FLIGHT

pytestmark = pytest.mark.slow

#: The error types a request may get back: those the protocol documents (swarmd.errors).
DOCUMENTED = {"ApiProtocolError", "JobValidationError", "UnknownAgentError", "JobNotFound", "ApiRefused"}
#: Idle connections opened at once, and the RSS growth they may cause in all.
IDLE_CONNECTIONS = 1000
RSS_GROWTH_LIMIT = 32 * 1024 * 1024

job_ids = st.text(alphabet="0123456789abcdef", min_size=1, max_size=40)
jobs = st.fixed_dictionaries(
    {"id": job_ids, "gid": st.text(min_size=1, max_size=12), "agent": st.sampled_from(["echo", "nope", ""])},
    optional={
        "payload": values,
        "priority": st.integers(-200, 200),
        "timeout": st.floats(),
        "attempt": st.integers(-1, 5),
        "submitted_by": st.text(max_size=10),
        "swarm_size": st.integers(-1, 3),
    },
)
arguments = st.one_of(
    values,
    st.fixed_dictionaries({"jobs": st.lists(jobs, max_size=3)}),
    st.fixed_dictionaries({"job_id": job_ids | values}),
    st.fixed_dictionaries({"swarm_id": job_ids | values}),
    st.fixed_dictionaries(
        {"state": st.sampled_from(["ready", "done", "x"]) | values, "limit": st.integers(-1, 20_000)}
    ),
    st.fixed_dictionaries({"n": st.integers(-5, 20_000) | values}),
)


@contextlib.contextmanager
def _daemon(directory: Path) -> Iterator[tuple[Daemon, Path]]:
    path = directory / "api.sock"
    daemon = Daemon(directory / "state", "--agents", "support.agents", env={"SWARMD_API_SOCKET": str(path)}).start()
    try:
        yield daemon, path
    finally:
        daemon.ensure_dead()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Path]]:
    """One daemon for the fuzzing: it must keep serving through all of it."""
    with _daemon(tmp_path_factory.mktemp("api")) as served:
        yield served


def _still_serves(path: Path) -> None:
    client = RawClient(path)
    try:
        response = client.call(Op.PING, {})
        assert response.ok, response.error
        assert isinstance(decode_result(Op.PING, response.result), PingResult)
    finally:
        client.close()


@given(body=st.binary(max_size=300))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_malformed_frame_gets_an_error_reply_and_the_connection_closes(
    served: tuple[Daemon, Path], body: bytes
) -> None:
    _, path = served
    with contextlib.suppress(msgspec.DecodeError):
        request = msgspec.msgpack.decode(body)
        if isinstance(request, dict) and request.get("v") == 1 and "id" in request and "op" in request:
            return  # (a valid request by chance: not this test's subject)
    client = RawClient(path)
    try:
        client.send_bytes(HEADER.pack(len(body)) + body)
        response = client.read_response()
        assert response is not None and not response.ok and response.error is not None
        assert response.error.type == "ApiProtocolError"
        assert client.read_response() is None  # closed
    finally:
        client.close()


def test_an_oversized_frame_is_refused_from_its_header_and_the_daemon_keeps_serving(
    served: tuple[Daemon, Path],
) -> None:
    daemon, path = served
    before = daemon.metrics()['swarmd_api_refused_total{reason="malformed"}']
    client = RawClient(path)
    try:
        client.send_bytes(HEADER.pack(MAX_FRAME + 1))
        response = client.read_response()
        assert response is not None and response.error is not None
        assert (response.error.type, response.error.field) == ("ApiProtocolError", "frame")
        assert "over the limit" in response.error.message
        assert client.read_response() is None
    finally:
        client.close()
    assert daemon.metrics()['swarmd_api_refused_total{reason="malformed"}'] == before + 1
    _still_serves(path)


@pytest.fixture(scope="module")
def connection(served: tuple[Daemon, Path]) -> Iterator[RawClient]:
    client = RawClient(served[1])
    try:
        yield client
    finally:
        client.close()


@given(op=st.sampled_from(list(Op)), args=arguments)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_arguments_of_any_operation_get_a_result_or_a_documented_error(
    connection: RawClient, op: Op, args: Any
) -> None:
    response = connection.call(op, args)  # one connection: a bad argument does not close it
    if response.ok:
        decode_result(op, response.result)
    else:
        assert response.error is not None
        assert response.error.type in DOCUMENTED, response.error


def test_the_daemon_serves_after_the_fuzzing(served: tuple[Daemon, Path]) -> None:
    daemon, path = served
    _still_serves(path)
    assert daemon.proc is not None and daemon.proc.poll() is None


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[tuple[Daemon, Path]]:
    """A daemon with no connection open yet."""
    with _daemon(tmp_path) as served:
        yield served


def test_memory_stays_bounded_under_a_thousand_idle_connections(fresh: tuple[Daemon, Path]) -> None:
    daemon, path = fresh
    refused_before = daemon.metrics()['swarmd_api_refused_total{reason="too_many_connections"}']
    rss_before = daemon.rss_bytes()
    sockets: list[socket.socket] = []
    try:
        for _ in range(IDLE_CONNECTIONS):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.connect(str(path))  # blocking: waits while the daemon's backlog is full
            sock.settimeout(30)
        # The daemon answers the connections past its limit at once, with an error, and closes them.
        wait_until(
            lambda: (
                daemon.metrics()['swarmd_api_refused_total{reason="too_many_connections"}']
                == refused_before + IDLE_CONNECTIONS - MAX_CONNECTIONS
            ),
            what="the connections past the limit refused",
        )
        rss_during = daemon.rss_bytes()
        assert rss_during - rss_before < RSS_GROWTH_LIMIT, (rss_before, rss_during)
        served_ok = 0
        for sock in sockets:
            client = RawClient(None, sock=sock)
            with contextlib.suppress(OSError):  # a refused one may be closed already
                sock.sendall(HEADER.pack(len(ping := encode({"v": 1, "id": 1, "op": "ping"}))) + ping)
            response = client.read_response()
            assert response is not None
            if response.ok:
                served_ok += 1
            else:
                assert response.error is not None
                assert f"already serves {MAX_CONNECTIONS} connections" in response.error.message
        assert served_ok == MAX_CONNECTIONS
    finally:
        for sock in sockets:
            sock.close()
    _still_serves(path)  # the slots come back once the idle connections close
    assert os.path.exists(path)


def _job(n: int, **fields: Any) -> dict[str, Any]:
    return {"id": f"api-limit-{n}-{os.urandom(4).hex()}", "gid": "GID-1", "agent": "echo", **fields}


@pytest.mark.parametrize(
    ("job", "field", "reason"),
    [
        (_job(1, payload=b"raw bytes"), "payload", "bytes is not JSON data"),
        (_job(2, payload="x" * (1024 * 1024 + 1)), "payload", "over the limit of 1048576"),
        (_job(3, agent="nobody-registered"), "agent", "unknown agent 'nobody-registered'"),
    ],
)
def test_a_submit_is_checked_as_a_direct_one_and_a_refused_batch_writes_nothing(
    served: tuple[Daemon, Path], job: dict[str, Any], field: str, reason: str
) -> None:
    _, path = served
    client = RawClient(path)
    try:
        counts_before = decode_result(Op.COUNTS, client.call(Op.COUNTS, {}).result)
        response = client.call(Op.SUBMIT_MANY, {"jobs": [_job(0), job]})  # one good job, one bad
        assert response.error is not None, response
        assert (response.error.type, response.error.field) in {
            ("JobValidationError", field),
            ("UnknownAgentError", field),
        }
        assert reason in response.error.message and "(job 1 of 2)" in response.error.message
        assert decode_result(Op.COUNTS, client.call(Op.COUNTS, {}).result) == counts_before
    finally:
        client.close()


def test_pipelined_requests_are_each_answered_with_their_id(served: tuple[Daemon, Path]) -> None:
    """More requests at once than a connection may run (MAX_IN_FLIGHT): reading waits, none is lost."""
    client = RawClient(served[1])
    try:
        count = 10 * MAX_IN_FLIGHT
        client.send_bytes(
            b"".join(frame(Request(VERSION, n, Op.COUNTS, msgspec.Raw(encode({})))) for n in range(1, count + 1))
        )
        answers = [client.read_response() for _ in range(count)]
    finally:
        client.close()
    assert sorted(answer.id for answer in answers if answer is not None and answer.ok) == list(range(1, count + 1))
