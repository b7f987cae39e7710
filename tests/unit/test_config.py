"""Settings: precedence, the example config, and errors that name the key and the source."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from swarmd.config import AgentSettings, Settings, load_settings, resolve_state_dir
from swarmd.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "swarmd.toml"


def test_precedence_is_flags_then_environment_then_file_then_defaults(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("max_concurrent = 10\nqueue = 'from-file'\nlog_level = 'warning'\nbackoff_cap = 9.0\n")
    env = {"SWARMD_MAX_CONCURRENT": "20", "SWARMD_QUEUE": "from-env"}
    settings = load_settings(config_path=config, flags={"max_concurrent": 30, "queue": None}, environ=env)
    assert settings.max_concurrent == 30  # flag beats environment
    assert settings.queue == "from-env"  # environment beats file (the flag was not given)
    assert settings.log_level == "warning"  # file beats default
    assert settings.backoff_base == 0.5  # default


def test_environment_lists_and_types_are_converted() -> None:
    settings = load_settings(environ={"SWARMD_AGENTS": "a.b, c.d", "SWARMD_GRACE_SECONDS": "2.5"})
    assert settings.agents == ["a.b", "c.d"]
    assert settings.grace_seconds == 2.5


def test_errors_name_the_key_and_where_it_came_from(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"max_concurrent: .* \(in environment\)") as env_error:
        load_settings(environ={"SWARMD_MAX_CONCURRENT": "lots"})
    assert env_error.value.key == "max_concurrent"
    with pytest.raises(ConfigError, match="SWARMD_NOPE: unknown setting"):
        load_settings(environ={"SWARMD_NOPE": "1"})
    config = tmp_path / "c.toml"
    config.write_text("[agent.echo]\ntimeout = -1\n")
    with pytest.raises(ConfigError) as file_error:
        load_settings(config_path=config, environ={})
    assert file_error.value.key == "agent.echo.timeout" and file_error.value.source == str(config)
    with pytest.raises(ConfigError, match="min_concurrent"):
        load_settings(flags={"min_concurrent": 9, "max_concurrent": 3}, environ={})
    with pytest.raises(ConfigError, match="not a loopback address"):
        load_settings(flags={"metrics_listen": "10.1.2.3:9464"}, environ={})
    allowed = load_settings(flags={"metrics_listen": "0.0.0.0:9464", "allow_remote_metrics": True}, environ={})
    assert allowed.metrics_listen == "0.0.0.0:9464"


def test_the_example_config_loads_and_documents_every_key() -> None:
    settings = load_settings(config_path=EXAMPLE, environ={})
    assert settings == msgspec.convert(msgspec.to_builtins(Settings()) | {"agent": {"sleep": {}}}, Settings)
    text = EXAMPLE.read_text()
    mentioned = set(re.findall(r"^#?\s*([a-z_]+) =", text, flags=re.M))
    for field in msgspec.structs.fields(Settings):
        if field.name != "agent":
            assert field.name in mentioned, f"deploy/swarmd.toml does not document {field.name}"
    for field in msgspec.structs.fields(AgentSettings):
        assert field.name in mentioned, f"deploy/swarmd.toml does not document agent.*.{field.name}"


def test_state_directory_resolution(tmp_path: Path) -> None:
    assert resolve_state_dir("/x/y", {}) == Path("/x/y")
    assert resolve_state_dir(None, {"STATE_DIRECTORY": "/var/lib/swarmd"}) == Path("/var/lib/swarmd")
    assert resolve_state_dir(None, {"XDG_STATE_HOME": str(tmp_path)}) == tmp_path / "swarmd"
