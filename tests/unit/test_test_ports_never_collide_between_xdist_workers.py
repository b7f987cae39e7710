"""The ports tests give their daemons: each pytest-xdist worker draws from a slice of its own,
below the kernel's ephemeral range, and one process does not hand out a port twice in a row."""

from __future__ import annotations

import socket

import pytest

from swarmd.testing import ports


def test_each_worker_has_a_slice_of_its_own_and_together_they_cover_the_range() -> None:
    top = 32768
    slices = [
        ports.port_slice({"PYTEST_XDIST_WORKER": f"gw{i}", "PYTEST_XDIST_WORKER_COUNT": "3"}, top) for i in range(3)
    ]
    taken = [port for block in slices for port in block]
    assert len(taken) == len(set(taken)), "two workers share a port"
    assert min(taken) == ports.LOWEST and max(taken) < top
    assert len(taken) > (top - ports.LOWEST) - 3  # at most a remainder of the division is unused


@pytest.mark.parametrize("environ", [{}, {"PYTEST_XDIST_WORKER": "master"}, {"PYTEST_XDIST_WORKER": "gw0"}])
def test_outside_xdist_the_whole_range_is_used(environ: dict[str, str]) -> None:
    assert ports.port_slice(environ, 32768) == range(ports.LOWEST, 32768)


def test_ports_come_from_below_the_ephemeral_range_and_are_not_repeated() -> None:
    handed = [ports.free_port() for _ in range(200)]
    assert len(set(handed)) == len(handed)
    assert all(ports.LOWEST <= port < ports.ephemeral_start() for port in handed)


def test_a_port_in_use_is_skipped() -> None:
    with socket.socket() as held, socket.socket() as other:
        held.bind(("127.0.0.1", 0))
        held.listen()
        other.bind(("127.0.0.1", 0))
        taken, free = held.getsockname()[1], other.getsockname()[1]
        other.close()
        assert ports.first_free([taken, free]) == free
        with pytest.raises(ports.NoFreePort):
            ports.first_free([taken])
