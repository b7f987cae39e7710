"""The blocking `Client` inside a running event loop: a clear error naming `AsyncClient`, raised
before anything is created (no state directory, no stray loop, no coroutine left unawaited)."""

from __future__ import annotations

import gc
import warnings
from pathlib import Path

import pytest

from swarmd import Client


async def test_the_blocking_client_refuses_a_running_loop_and_names_the_async_client(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "coroutine ... was never awaited" would be a RuntimeWarning
        with pytest.raises(RuntimeError, match="AsyncClient") as raised:
            Client(state)
        gc.collect()
    assert "running event loop" in str(raised.value)
    assert not state.exists()  # refused before anything was created
