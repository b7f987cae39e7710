"""Security defaults: what swarmd does when nobody configured anything (checked in-process;
tests/integration/test_daemon_security_defaults.py checks a real daemon).

- The HTTP listener binds 127.0.0.1; any other address needs --allow-remote-metrics (from
  whichever source it comes: flag, environment, config file).
- No pickle, eval, exec, os.system, subprocess or shell=True on the job path: a scan of the
  package's syntax tree, with an allow-list that says why each exception is one.
- Payload size and nesting depth are capped at submit.
- The built-in agents cannot run commands.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.paths import REPO

from swarmd import builtin_agents
from swarmd.builtin_agents import register_builtins
from swarmd.client import Client
from swarmd.config import Settings, listen_address, load_settings
from swarmd.errors import ConfigError, JobValidationError, Permanent
from swarmd.model import MAX_PAYLOAD_BYTES, MAX_PAYLOAD_DEPTH, new_job
from swarmd.registry import JobContext, Registry

PACKAGE = REPO / "swarmd"


# -- the HTTP listener --------------------------------------------------------------------
def test_the_listener_defaults_to_loopback() -> None:
    assert Settings().metrics_listen.startswith("127.0.0.1:")
    assert listen_address(load_settings(environ={}))[0] == "127.0.0.1"


@pytest.mark.parametrize(
    "address", ["0.0.0.0:9464", "[::]:9464", "192.0.2.7:9464", "127.0.0.1.example.com:80", "[::ffff:0.0.0.0]:80"]
)
def test_a_non_loopback_listener_needs_the_explicit_flag(tmp_path: Path, address: str) -> None:
    config = tmp_path / "swarmd.toml"
    config.write_text(f'metrics_listen = "{address}"\n')
    for where in (
        {"flags": {"metrics_listen": address}},
        {"environ": {"SWARMD_METRICS_LISTEN": address}},
        {"config_path": config},
    ):
        kwargs: dict[str, Any] = {"environ": {}, **where}
        with pytest.raises(ConfigError) as refused:
            load_settings(**kwargs)
        assert refused.value.key == "metrics_listen" and "allow_remote_metrics" in str(refused.value)
        allowed = load_settings(**{**kwargs, "flags": {**kwargs.get("flags", {}), "allow_remote_metrics": True}})
        assert allowed.metrics_listen == address


# -- no pickle, eval or shell --------------------------------------------------------------
#: Modules whose mere import on the job path would mean code from data (pickle and its kin,
#: multiprocessing pickles too) or a way to run commands.
FORBIDDEN_MODULES = {"pickle", "_pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle", "multiprocessing"}
FORBIDDEN_MODULES |= {"subprocess", "pty", "pexpect", "commands"}
#: Calls that run code or commands: builtins by name, os.* and friends by attribute.
FORBIDDEN_BUILTINS = {"eval", "exec", "compile", "__import__", "breakpoint"}
FORBIDDEN_ATTRIBUTES = {
    "system", "popen", "execv", "execve", "execvp", "execvpe", "execl", "execle", "execlp", "execlpe",
    "spawnv", "spawnve", "spawnl", "spawnle", "spawnvp", "spawnlp", "posix_spawn", "posix_spawnp", "fork",
    "import_module", "create_subprocess_exec", "create_subprocess_shell", "subprocess_exec", "subprocess_shell",
    "loads", "load",
}  # fmt: skip
#: ``load``/``loads`` are only forbidden on these (json, msgspec, tomllib are data-only).
CODE_LOADERS = {"pickle", "marshal", "shelve", "dill", "cloudpickle", "yaml"}
#: (file under swarmd/, finding) -> why it is not on the job path, or why it is safe there.
ALLOWED = {
    ("bench/scale.py", "import subprocess"): "`swarmd bench scale` runs the bare-asyncio floor in a child Python "
    "(sys.executable -c, a constant script) with a fixed argv; no job data reaches it",
    ("testing/daemon.py", "import subprocess"): "starts `swarmd serve` for `swarmd demo` and `swarmd bench` "
    "with an argv list of its own (no shell)",
    ("bench/helpers.py", "import subprocess"): "`swarmd bench` asks `swarmd serve --help` which options it has, "
    "with a fixed argv (no shell); no job data reaches it",
    ("runtime/supervisor.py", "asyncio.create_subprocess_exec"): "`serve --workers N` starts its workers as "
    "`python -m swarmd.runtime.worker_process` with a fixed argv (settings in the environment); no job data",
    ("registry.py", "importlib.import_module"): "imports the agent modules the config names "
    "(settings.agents), at start-up; a job's agent is only a key in the registry",
    ("policies/admission.py", "importlib.import_module"): "imports the exception types the config names in "
    "[agent.NAME].permanent, at start-up",
}
#: Modules (and packages, with everything in them) that may use what ALLOWED lets them, and must
#: stay off the daemon's import graph.
TOOLS = ("swarmd.bench", "swarmd.testing", "swarmd.cli.demo")


def _findings(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for module in modules:
                if module.split(".")[0] in FORBIDDEN_MODULES | CODE_LOADERS:
                    yield node.lineno, f"import {module}"
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in FORBIDDEN_BUILTINS:
                yield node.lineno, f"{func.id}()"
            elif isinstance(func, ast.Attribute) and func.attr in FORBIDDEN_ATTRIBUTES:
                owner = ast.unparse(func.value)
                if func.attr in ("load", "loads") and owner.split(".")[-1] not in CODE_LOADERS:
                    continue
                yield node.lineno, f"{owner}.{func.attr}"
            for keyword in node.keywords:
                if keyword.arg == "shell" and not (
                    isinstance(keyword.value, ast.Constant) and keyword.value.value is False
                ):
                    yield node.lineno, "shell=..."


def test_no_pickle_eval_exec_or_shell_in_the_package() -> None:
    found = {
        (path.relative_to(PACKAGE).as_posix(), what): line
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, what in _findings(path)
    }
    unexplained = {
        f"swarmd/{name}:{line}: {what}" for (name, what), line in found.items() if (name, what) not in ALLOWED
    }
    assert not unexplained, f"code or commands from data: {sorted(unexplained)}"
    stale = set(ALLOWED) - set(found)
    assert not stale, f"allow-list entries that match nothing any more (remove them): {sorted(stale)}"


def test_the_scan_sees_what_it_forbids(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import pickle, subprocess\nimport os\nfrom marshal import loads\n"
        "eval('1')\nexec('x = 1')\nos.system('true')\nsubprocess.run('true', shell=True)\npickle.loads(b'')\n"
        "__import__('os')\nimport importlib\nimportlib.import_module('os')\nimport json\njson.loads('1')\n"
    )
    whats = {what for _, what in _findings(sample)}
    assert whats == {
        "import pickle", "import subprocess", "import marshal", "eval()", "exec()", "os.system", "shell=...",
        "pickle.loads", "__import__()", "importlib.import_module",
    }  # fmt: skip


def _module_file(module: str) -> Path | None:
    """The source of the swarmd module or package ``module`` (dotted), if there is one."""
    where = PACKAGE.joinpath(*module.split(".")[1:])
    for candidate in (where / "__init__.py", where.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imports(module: str) -> set[str]:
    """The swarmd modules ``module`` imports (at any depth of its source, lazily or not), with the
    packages above them, whose ``__init__`` an import runs too."""
    path = _module_file(module)
    assert path is not None, module
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "swarmd":
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if _module_file(f"{node.module}.{a.name}"))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "swarmd")
    parts = [name.split(".") for name in found]
    return {".".join(names[:depth]) for names in parts for depth in range(1, len(names) + 1)}


def _is_tool(module: str) -> bool:
    return any(module == tool or module.startswith(f"{tool}.") for tool in TOOLS)


def test_the_daemon_never_imports_the_tools_that_spawn_processes() -> None:
    seen, todo = set(), ["swarmd.runtime.daemon", "swarmd"]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(_imports(module))
    # the walk follows the job path
    assert {"swarmd.runtime.worker", "swarmd.runtime.execution", "swarmd.queue.sqlite.backend", "swarmd.model"} <= seen
    assert not {module for module in seen if _is_tool(module)}, sorted(module for module in seen if _is_tool(module))


# -- payload caps ----------------------------------------------------------------------------
def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_payload_size_and_depth_are_capped_at_submit(tmp_path: Path) -> None:
    assert new_job(agent="echo", gid="G", payload=_nested(MAX_PAYLOAD_DEPTH)).payload == _nested(MAX_PAYLOAD_DEPTH)
    with pytest.raises(JobValidationError, match="nested deeper than 32") as deep:
        new_job(agent="echo", gid="G", payload=_nested(MAX_PAYLOAD_DEPTH + 1))
    assert deep.value.field == "payload"
    new_job(agent="echo", gid="G", payload="x" * (MAX_PAYLOAD_BYTES - 2))  # quoted: exactly the limit
    with pytest.raises(JobValidationError, match="over the limit") as big:
        new_job(agent="echo", gid="G", payload="x" * (MAX_PAYLOAD_BYTES - 1))
    assert big.value.field == "payload"
    with Client(tmp_path / "state", agents=["echo"]) as client:
        with pytest.raises(JobValidationError, match="over the limit"):
            client.submit("echo", gid="G", payload={"blob": "x" * MAX_PAYLOAD_BYTES})
        with pytest.raises(JobValidationError, match="nested deeper"):
            client.submit("echo", gid="G", payload=_nested(MAX_PAYLOAD_DEPTH + 1))
        assert client.counts()["ready"] == 0


# -- the built-in agents --------------------------------------------------------------------------
def test_the_builtin_agents_import_nothing_that_reaches_the_system() -> None:
    tree = ast.parse(Path(builtin_agents.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in {"open", "eval", "exec", "compile", "__import__", "getattr", "globals"}
        elif isinstance(node, ast.Attribute):
            assert node.attr not in FORBIDDEN_ATTRIBUTES | {"run", "call", "check_output", "Popen"}
    assert imported <= {"__future__", "asyncio", "typing", "swarmd.errors", "swarmd.registry"}, imported
    registry = Registry()
    register_builtins(registry)
    assert registry.names() == ["echo", "fail", "sleep"]


async def test_the_builtin_agents_treat_a_command_as_plain_data(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    command = f"touch {marker}; $(touch {marker}) `touch {marker}`"
    ctx = JobContext(new_job(agent="echo", gid="G"), log=None)
    payload = {"cmd": command, "args": ["-c", command], "shell": True, "seconds": 0}
    assert await builtin_agents.echo(ctx, payload) == payload
    assert await builtin_agents.sleep(ctx, payload) == {"agent_gid": "G", "slept": 0}
    with pytest.raises(Permanent):
        await builtin_agents.sleep(ctx, {"seconds": command})
    with pytest.raises(builtin_agents.FailedOnPurpose) as failed:
        await builtin_agents.fail(ctx, {"message": command})
    assert str(failed.value) == command
    assert not marker.exists()
