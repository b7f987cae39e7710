"""Agent modules are looked for in ``agents_path``, then in a trusted working directory, then on
``sys.path``; those directories are on ``sys.path`` only while the modules are imported, and an
error says what was searched, what was skipped and why."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from swarmd.config import load_settings
from swarmd.errors import ConfigError
from swarmd.registry import agent_search_path, build_registry, load_agent_modules

AGENT = """
from swarmd.registry import Registry, agent

mine = Registry()


@agent("{name}", registry=mine)
async def handler(ctx, payload):
    return payload
"""


def module_dir(path: Path, module: str, body: str, mode: int = 0o700) -> Path:
    path.mkdir()
    (path / f"{module}.py").write_text(body)
    os.chmod(path, mode)
    return path


def test_the_directories_leave_sys_path_after_the_import(tmp_path: Path) -> None:
    directory = module_dir(tmp_path / "agents", "scoped_agents_a", AGENT.format(name="scoped-a"))
    before = list(sys.path)
    try:
        load_agent_modules(["scoped_agents_a"], search=agent_search_path([directory], cwd=tmp_path))
        assert sys.modules["scoped_agents_a"].mine.names() == ["scoped-a"]
        assert sys.path == before
    finally:
        sys.modules.pop("scoped_agents_a", None)


def test_agents_path_comes_before_the_working_directory(tmp_path: Path) -> None:
    first = module_dir(tmp_path / "first", "scoped_agents_b", "WHERE = 'first'\n")
    here = module_dir(tmp_path / "here", "scoped_agents_b", "WHERE = 'here'\n")
    search = agent_search_path([first], cwd=here)
    assert search.directories == (first.resolve(), here.resolve())
    try:
        load_agent_modules(["scoped_agents_b"], search=search)
        assert sys.modules["scoped_agents_b"].WHERE == "first"
    finally:
        sys.modules.pop("scoped_agents_b", None)


def test_an_untrusted_working_directory_is_skipped_with_its_reason(tmp_path: Path) -> None:
    shared = module_dir(tmp_path / "shared", "scoped_agents_c", "", mode=0o757)
    search = agent_search_path(cwd=shared)
    assert search.directories == ()
    with pytest.raises(ConfigError) as error:
        load_agent_modules(["scoped_agents_c"], search=search)
    message = str(error.value)
    assert "cannot import agent module 'scoped_agents_c': not found (searched sys.path;" in message
    assert f"skipped the working directory {shared}: it is writable by group or others (mode 0757)" in message
    assert "--agents-path" in message


def test_the_state_directory_and_what_is_inside_it_are_skipped(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "sub").mkdir(parents=True)
    assert agent_search_path(cwd=state, state_dir=state).skipped == ((state, "it is the state directory"),)
    (skipped,) = agent_search_path(cwd=state / "sub", state_dir=state).skipped
    assert skipped == (state / "sub", f"it is inside the state directory {state}")


def test_an_error_inside_the_module_is_not_reported_as_not_found(tmp_path: Path) -> None:
    directory = module_dir(tmp_path / "broken", "scoped_agents_d", "import scoped_no_such_dependency\n")
    with pytest.raises(ConfigError, match="No module named 'scoped_no_such_dependency'") as error:
        load_agent_modules(["scoped_agents_d"], search=agent_search_path([directory], cwd=tmp_path))
    assert "not found (searched" not in str(error.value)


def test_an_agents_path_entry_that_is_no_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"agents_path: .*missing is not a directory"):
        build_registry([], agents_path=[tmp_path / "missing"])


def test_agents_path_is_a_setting_of_every_layer(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('agents_path = ["/from/file"]\n')
    assert load_settings(config_path=config, environ={}).agents_path == ["/from/file"]
    from_env = load_settings(config_path=config, environ={"SWARMD_AGENTS_PATH": f"/a{os.pathsep}/b"})
    assert from_env.agents_path == ["/a", "/b"]
    flags = load_settings(config_path=config, flags={"agents_path": ["/c"]}, environ={})
    assert flags.agents_path == ["/c"]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a directory to another user")
def test_a_working_directory_owned_by_another_user_is_skipped(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, 65534, 65534)  # nobody
    (skipped,) = agent_search_path(cwd=theirs).skipped
    assert skipped == (theirs, "it is owned by another user (uid 65534, not 0)")


def test_an_entry_already_on_sys_path_stays_there(tmp_path: Path) -> None:
    directory = module_dir(tmp_path / "already", "scoped_agents_e", "")
    sys.path.append(str(directory))
    try:
        load_agent_modules(["scoped_agents_e"], search=agent_search_path([directory], cwd=tmp_path))
        assert sys.path.count(str(directory)) == 1 and sys.path[-1] == str(directory)
    finally:
        sys.path.remove(str(directory))
        sys.modules.pop("scoped_agents_e", None)
