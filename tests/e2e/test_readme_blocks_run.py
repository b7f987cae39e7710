"""Every code block of README.md says whether it is tested, and every block marked tested runs
as a user would run it: shell blocks with the installed ``swarmd`` on PATH, Python blocks with
this environment's python, each in a fresh directory that is also HOME, so that the default
state directory (``~/.local/state/swarmd``) is a temporary one.

The HTML comment on the line before a block says how it is run:

``<!-- tested -->``               run it; it must exit 0.
``<!-- tested: file -->``         a module whose first line names its file (``# myagents.py``):
                                  written into every block's directory; tested by importing it.
``<!-- tested: daemon -->``       a command that runs the daemon: started, it must report ready,
                                  then stop with exit code 0 on SIGTERM. The first such block is
                                  also the daemon of the blocks marked ``with daemon``.
``<!-- tested: with daemon -->``  run it while that daemon runs, in the same directory.
``<!-- not tested: REASON -->``   not run; the reason is required.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest
from support.harness import free_port, ledger_count, wait_until
from support.paths import REPO

pytestmark = pytest.mark.slow

README: Final = REPO / "README.md"
#: The directory of this environment's python and its ``swarmd`` script: first on PATH.
BIN: Final = Path(sys.executable).parent
MARKER: Final = re.compile(r"<!--\s*(tested(?::\s*(file|daemon|with daemon))?|not tested:\s*(\S.*?))\s*-->")
FENCE: Final = re.compile(r"^```(\w*)\s*$")
SHELLS: Final = frozenset({"sh", "bash", "shell", "console"})
#: Seconds a block may take; a daemon's start and stop each get as long.
BLOCK_TIMEOUT: Final = 50.0


@dataclass(frozen=True, slots=True)
class Block:
    """One fenced code block of a markdown file, with the marker before it."""

    line: int
    language: str
    code: str
    #: The marker comment's text ("" when the line before the block is none).
    marker: str
    #: "run", "file", "daemon", "with daemon" or "skip"; "" when unmarked or malformed.
    kind: str

    @property
    def name(self) -> str:
        return f"README.md:{self.line}"


def parse_blocks(text: str) -> list[Block]:
    """The fenced blocks of ``text``, each with the marker comment on the line before it."""
    lines = text.splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if fence is None:
            index += 1
            continue
        end = next((j for j in range(index + 1, len(lines)) if lines[j].startswith("```")), len(lines))
        before = lines[index - 1].strip() if index > 0 else ""
        match = MARKER.fullmatch(before)
        kind = ""
        if match is not None:
            kind = "skip" if match[1].startswith("not tested") else (match[2] or "run")
        code = "\n".join(lines[index + 1 : end]) + "\n"
        blocks.append(Block(index + 1, fence[1], code, before if before.startswith("<!--") else "", kind))
        index = end + 1
    return blocks


BLOCKS: Final = parse_blocks(README.read_text())
TESTED: Final = [block for block in BLOCKS if block.kind not in ("", "skip")]
FILES: Final = [block for block in BLOCKS if block.kind == "file"]
DAEMONS: Final = [block for block in BLOCKS if block.kind == "daemon"]


def file_name(block: Block) -> str:
    """The file a ``tested: file`` block is saved as: the name on its first line."""
    match = re.fullmatch(r"#\s*([\w.-]+\.py)", block.code.splitlines()[0].strip())
    assert match is not None, f"{block.name}: a file block starts with '# NAME.py'"
    return match[1]


def environment(home: Path, port: int) -> dict[str, str]:
    """A user's environment in ``home``: no swarmd, OpenTelemetry or systemd settings of this
    process, no PYTHONPATH, this environment's ``swarmd`` and python first on PATH; the
    daemon's listener on ``port`` (the default 9464 may be taken on a shared machine)."""
    dropped = ("SWARMD_", "OTEL_", "NOTIFY_", "STATE_DIRECTORY", "XDG_STATE_HOME", "PYTHONPATH", "VIRTUAL_ENV")
    env = {key: value for key, value in os.environ.items() if not key.startswith(dropped)}
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env["HOME"] = str(home)
    env["SWARMD_METRICS_LISTEN"] = f"127.0.0.1:{port}"
    return env


def command(block: Block, directory: Path) -> list[str]:
    """How ``block`` is run: shell code by bash (stopping at the first failing command, as
    ``set -euo pipefail`` does), Python code by this environment's python, from a file."""
    if block.language in SHELLS:
        # -c: bash runs a lone command in its own process (exec), so a daemon gets our signals.
        return ["bash", "-euo", "pipefail", "-c", block.code]
    if block.language == "python":
        script = directory / f"readme_block_{block.line}.py"
        script.write_text(block.code)
        return [sys.executable, str(script)]
    raise AssertionError(f"{block.name}: a tested block must be sh or python, not {block.language!r}")


def run(block: Block, directory: Path, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``block`` to its end in ``directory``."""
    return subprocess.run(
        command(block, directory),
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
        check=False,
    )


def check(block: Block, result: subprocess.CompletedProcess[str]) -> None:
    """``block`` ran and exited 0, or the failure says which block and what it printed."""
    output = f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    assert result.returncode == 0, f"{block.name} exited {result.returncode}:\n{block.code}\n{output}"


def readyz(port: int) -> int:
    """The HTTP status of the daemon's ``/readyz`` on ``port``; 0 when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1.0) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


@contextmanager
def daemon(block: Block, directory: Path, env: Mapping[str, str], port: int) -> Iterator[None]:
    """Run the daemon ``block`` in ``directory`` until the end of the ``with``; it must report
    ready, and stop on SIGTERM with exit code 0."""
    log_path = directory / f"daemon-{block.line}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command(block, directory), cwd=directory, env=env, stdout=log, stderr=log)
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(
                    f"{block.name} exited {proc.returncode} before it was ready:\n{log_path.read_text()}"
                )
            return readyz(port) == 200

        wait_until(ready, timeout=BLOCK_TIMEOUT, what=f"the daemon of {block.name} to report ready")
        yield
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(BLOCK_TIMEOUT)
        assert code == 0, f"{block.name} exited {code} after SIGTERM:\n{log_path.read_text()}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_every_block_says_whether_it_is_tested() -> None:
    unmarked = [block.name for block in BLOCKS if not block.kind]
    assert not unmarked, (
        f"blocks without a valid <!-- tested... --> or <!-- not tested: reason --> line before them: {unmarked}"
    )
    assert len(DAEMONS) >= 1, "no block is marked <!-- tested: daemon -->: the 'with daemon' blocks need one"
    for block in FILES:
        file_name(block)


@pytest.mark.parametrize("block", TESTED, ids=[block.name for block in TESTED])
def test_readme_block_runs(block: Block, tmp_path: Path) -> None:
    # A short directory (not tmp_path, longer under xdist): the state dir's unix sockets (API,
    # wake-ups, each worker's metrics) must fit AF_UNIX's 107 bytes.
    directory = Path(tempfile.mkdtemp(prefix="sd-", dir="/tmp"))
    port = free_port()
    env = environment(directory, port)
    for module in FILES:  # what a user following the README has written so far
        (directory / file_name(module)).write_text(module.code)
    if block.kind == "file":
        name = file_name(block).removesuffix(".py")
        check(block, run(Block(block.line, "python", f"import {name}\n", "", "run"), directory, env))
    elif block.kind == "daemon":
        with daemon(block, directory, env, port):
            pass
    elif block.kind == "with daemon":
        with daemon(DAEMONS[0], directory, env, port):
            check(block, run(block, directory, env))
            # The block's work reached the daemon: both used the default state directory.
            state_dir = directory / ".local" / "state" / "swarmd"
            wait_until(lambda: ledger_count(state_dir) > 0, timeout=BLOCK_TIMEOUT, what=f"a job of {block.name} to run")
    else:
        check(block, run(block, directory, env))


def test_a_failing_block_fails_the_test(tmp_path: Path) -> None:
    """The runner above does not pass a block that fails halfway, in either language."""
    env = environment(tmp_path, free_port())
    for language, code in (("sh", "true\nfalse\ntrue\n"), ("python", "raise SystemExit(3)\n")):
        block = Block(1, language, code, "<!-- tested -->", "run")
        with pytest.raises(AssertionError, match=r"README\.md:1 exited"):
            check(block, run(block, tmp_path, env))
