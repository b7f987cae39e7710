"""SIGHUP's reload validates exactly as start-up does, says which changed keys need a restart,
and warns of an [agent.NAME] table for an agent nobody registered."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from swarmd.builtin_agents import register_builtins
from swarmd.config import Settings
from swarmd.queue.sqlite.backend import SqliteBackend
from swarmd.registry import Registry
from swarmd.runtime.daemon import Daemon
from swarmd.runtime.worker import Worker
from swarmd.telemetry.metrics import Metrics
from swarmd.telemetry.tracing import Tracing


def _daemon_and_worker(tmp_path: Path, config_text: str) -> tuple[Daemon, Worker]:
    config = tmp_path / "swarmd.toml"
    config.write_text(config_text)
    settings = Settings(max_concurrent=2)
    registry = Registry()
    register_builtins(registry)
    metrics = Metrics(CollectorRegistry(), agents=registry.names())
    worker = Worker(SqliteBackend(tmp_path), registry, settings, metrics, Tracing(None))
    daemon = Daemon(settings, config_path=config, environ={})
    daemon.registry = registry
    return daemon, worker


async def test_keys_a_reload_cannot_change_are_named_in_the_log(tmp_path: Path) -> None:
    daemon, worker = _daemon_and_worker(tmp_path, "max_concurrent = 5\npoll_interval = 3.0\nqueue = 'other'\n")
    with capture_logs() as logs:
        await daemon._reload(worker)
    assert worker.settings.max_concurrent == 5
    [warning] = [entry for entry in logs if entry["event"] == "reload_needs_restart"]
    assert warning["keys"] == ["poll_interval", "queue"]
    assert daemon.settings.queue == "default"  # still the one it started with


async def test_a_reload_refuses_what_start_up_refuses_and_keeps_the_settings(tmp_path: Path) -> None:
    daemon, worker = _daemon_and_worker(tmp_path, "max_concurrent = 9\n[agent.echo]\nrate = inf\n")
    with capture_logs() as logs:
        await daemon._reload(worker)
    [failure] = [entry for entry in logs if entry["event"] == "reload_failed"]
    assert "agent.echo.rate" in failure["error"]
    assert worker.settings.max_concurrent == 2 and daemon.settings.max_concurrent == 2


async def test_an_agent_table_for_an_unregistered_agent_is_a_warning(tmp_path: Path) -> None:
    daemon, worker = _daemon_and_worker(tmp_path, "[agent.slep]\nmax_attempts = 2\n")
    with capture_logs() as logs:
        await daemon._reload(worker)
    [warning] = [entry for entry in logs if entry["event"] == "config_unknown_agents"]
    assert warning["agents"] == ["slep"]
    assert "sleep" in warning["known"]
