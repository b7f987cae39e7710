"""deploy/systemd/swarmd.service: what the unit promises, checked by systemd's own tools.

- The settings the daemon relies on (Type=notify, the watchdog, a stop timeout longer than
  the drain grace period, ...) are read from the file and compared with the daemon's code.
- ``systemd-analyze verify`` must print nothing and ``systemd-analyze security --offline=yes
  --threshold=10`` must pass with an exposure of 1.0 or lower.
- The runtime dependencies still work under the unit's SystemCallFilter= and
  MemoryDenyWriteExecute=, re-created here with libseccomp because systemd is not PID 1 in
  these containers (``systemd-run`` answers "System has not been booted with systemd").

The tools are found with :func:`require_tool`: without them the tests skip, and under
``SWARMD_TEST_STRICT=1`` they fail.
"""

from __future__ import annotations

import errno
import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, requires
from pathlib import Path

import pytest
from support.services import require_tool

from swarmd.config import Settings
from swarmd.testing.daemon import free_port

pytestmark = pytest.mark.systemd

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "swarmd.service"
SHIPPED_EXEC = "/usr/local/bin/swarmd"


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value assigned, in order (systemd keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"assignment outside a section: {raw!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not an assignment: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


_SPAN_UNITS = {"ms": 0.001, "s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0}


def timespan_seconds(value: str) -> float:
    """A systemd time span such as ``45s``, ``1min 30s`` or ``90`` (seconds), in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value)
    assert parts, f"not a time span: {value!r}"
    return sum(float(number) * _SPAN_UNITS[unit or "s"] for number, unit in parts)


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    return parse_unit(UNIT.read_text())["Service"]


def one(service: dict[str, list[str]], key: str) -> str:
    values = service.get(key)
    assert values, f"{key}= missing from {UNIT.name}"
    assert len(values) == 1, f"{key}= set {len(values)} times: {values}"
    return values[0]


# --------------------------------------------------------------------------- static checks


def test_lifecycle_settings_match_what_the_daemon_does(service: dict[str, list[str]]) -> None:
    assert one(service, "Type") == "notify"  # the daemon sends READY=1 / STOPPING=1
    assert one(service, "NotifyAccess") == "main"
    assert timespan_seconds(one(service, "WatchdogSec")) == 30
    assert one(service, "Restart") == "on-failure"
    assert one(service, "KillMode") == "mixed"
    assert one(service, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(service, "EnvironmentFile") == "-/etc/default/swarmd"
    exec_start = one(service, "ExecStart").split()
    assert exec_start[0] == SHIPPED_EXEC
    assert exec_start[1:] == ["serve", "--config", "/etc/swarmd/swarmd.toml"]


def test_stop_timeout_outlasts_the_drain_grace_period(service: dict[str, list[str]]) -> None:
    grace = Settings().grace_seconds
    stop = timespan_seconds(one(service, "TimeoutStopSec"))
    # SIGKILL must not cut the drain short; leave room for the ledger flush after it.
    assert stop >= grace + 10, f"TimeoutStopSec={stop}s leaves no margin over grace {grace}s"


def test_identity_and_state(service: dict[str, list[str]]) -> None:
    assert one(service, "DynamicUser") == "yes"
    assert one(service, "StateDirectory") == "swarmd"
    assert one(service, "StateDirectoryMode") == "0700"
    assert one(service, "UMask") == "0077"


def test_sandbox_is_complete(service: dict[str, list[str]]) -> None:
    expected = {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "ProtectClock": "yes",
        "ProtectHostname": "yes",
        "ProtectProc": "invisible",
        "PrivateUsers": "yes",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "NoNewPrivileges": "yes",
        "RestrictNamespaces": "yes",
        "RestrictRealtime": "yes",
        "RestrictSUIDSGID": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native",
        "SystemCallErrorNumber": "EPERM",
        "RemoveIPC": "yes",
        "DevicePolicy": "closed",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "IPAddressDeny": "any",
        "IPAddressAllow": "localhost",
    }
    actual = {key: one(service, key) for key in expected}
    assert actual == expected
    assert service["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    # ProcSubset=pid hides /proc/stat & co: prometheus-client's process_* metrics vanish.
    assert "ProcSubset" not in service


# ------------------------------------------------------------------ systemd-analyze verify


def runnable_unit(tmp_path: Path) -> Path:
    """The shipped unit with only its ExecStart binary swapped for one that exists here.

    ``verify`` checks that the ExecStart binary exists and is executable; the shipped path
    (/usr/local/bin/swarmd) is where an operator installs it, not where the test venv has it.
    So the copy points at this venv's ``swarmd`` console script when it is installed, else at
    /bin/true. Every other line is verified byte for byte as shipped, and
    test_shipped_unit_verify_only_misses_the_binary checks the file itself.
    """
    script = Path(sys.executable).parent / "swarmd"
    binary = str(script) if script.exists() else "/bin/true"
    text = UNIT.read_text()
    prefix = f"ExecStart={SHIPPED_EXEC} "
    assert text.count(prefix) == 1
    out = tmp_path / "swarmd.service"  # verify needs the real unit name
    out.write_text(text.replace(prefix, f"ExecStart={binary} "))
    changed = [(a, b) for a, b in zip(text.splitlines(), out.read_text().splitlines(), strict=True) if a != b]
    assert len(changed) == 1 and changed[0][0].startswith("ExecStart=")
    return out


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    tool = require_tool("systemd-analyze")
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60, check=False)


def test_verify_prints_nothing(tmp_path: Path) -> None:
    result = analyze("verify", str(runnable_unit(tmp_path)))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_shipped_unit_verify_only_misses_the_binary() -> None:
    result = analyze("verify", str(UNIT))
    lines = (result.stdout + result.stderr).splitlines()
    if Path(SHIPPED_EXEC).exists():
        assert (result.returncode, lines) == (0, [])
    else:
        assert lines == [f"swarmd.service: Command {SHIPPED_EXEC} is not executable: No such file or directory"]


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above is not vacuous: a misspelt value makes verify speak (though it still
    exits 0, which is why test_verify_prints_nothing compares the output too)."""
    unit = runnable_unit(tmp_path)
    unit.write_text(unit.read_text().replace("KillMode=mixed", "KillMode=mixd"))
    result = analyze("verify", str(unit))
    assert "Failed to parse kill mode specification, ignoring: mixd" in result.stderr


EXPOSURE = re.compile(r"Overall exposure level for swarmd\.service: (\d+\.\d+)")


def test_security_exposure_at_most_one() -> None:
    result = analyze("security", "--offline=yes", "--threshold=10", str(UNIT))
    match = EXPOSURE.search(result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 1.0, result.stdout
    assert result.returncode == 0, result.stdout + result.stderr


def test_security_threshold_fails_a_weaker_unit(tmp_path: Path) -> None:
    """--threshold=10 really is exposure 1.0: drop two settings and the command fails."""
    weaker = tmp_path / "swarmd.service"
    text = UNIT.read_text()
    for line in ("PrivateMounts=yes\n", "MemoryDenyWriteExecute=yes\n"):
        assert line in text
        text = text.replace(line, "")
    weaker.write_text(text)
    result = analyze("security", "--offline=yes", "--threshold=10", str(weaker))
    match = EXPOSURE.search(result.stdout)
    assert match and float(match.group(1)) > 1.0
    assert result.returncode != 0


# ------------------------------------ the daemon's dependencies under the unit's seccomp filter

# Applied in a child process right before exec: SystemCallFilter= as an allow list whose
# default is SystemCallErrorNumber=, and MemoryDenyWriteExecute= as systemd 252 builds it
# (src/shared/seccomp-util.c, seccomp_memory_deny_write_execute): EPERM for mmap() asking for
# PROT_WRITE|PROT_EXEC, for mprotect()/pkey_mprotect() asking for PROT_EXEC, for shmat() with
# SHM_EXEC. Both filters survive execve().
_LAUNCHER = r"""
import ctypes, ctypes.util, json, os, sys

allowed, errno_, argv = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
lib.seccomp_init.restype = ctypes.c_void_p
lib.seccomp_init.argtypes = [ctypes.c_uint32]
lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
lib.seccomp_load.argtypes = [ctypes.c_void_p]


class ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


lib.seccomp_rule_add_array.argtypes = [
    ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(ArgCmp)]
ALLOW, ERRNO = 0x7FFF0000, 0x00050000 | errno_
MASKED_EQ = 7  # SCMP_CMP_MASKED_EQ
PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000


def nr(name):
    return lib.seccomp_syscall_resolve_name(name.encode())


# SystemCallFilter=: an allow list, everything else fails with SystemCallErrorNumber=.
flt = lib.seccomp_init(ERRNO)
count = 0
for name in allowed:
    if nr(name) >= 0 and lib.seccomp_rule_add_array(flt, ALLOW, nr(name), 0, None) == 0:
        count += 1
assert count > 200, count
# MemoryDenyWriteExecute=yes.
mdwe = lib.seccomp_init(ALLOW)
for name, mask in (("mmap", PROT_WRITE | PROT_EXEC), ("mprotect", PROT_EXEC),
                   ("pkey_mprotect", PROT_EXEC), ("shmat", SHM_EXEC)):
    cmp = ArgCmp(2, MASKED_EQ, mask, mask)
    assert lib.seccomp_rule_add_array(mdwe, ERRNO, nr(name), 1, ctypes.byref(cmp)) == 0, name
assert lib.seccomp_load(mdwe) == 0
assert lib.seccomp_load(flt) == 0
os.execv(argv[0], argv)
"""

# Runs under the filter: touches each runtime dependency the way the daemon does, then
# proves the filter is live (a W+X mapping and a @resources call are refused).
_PROBE = r"""
import asyncio, ctypes, errno, importlib, json, mmap, os, pkgutil, sqlite3, sys, tempfile

import hiredis, msgspec, structlog, uvloop
import prometheus_client
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import swarmd
out = {"modules": []}
for info in pkgutil.walk_packages(swarmd.__path__, "swarmd."):
    if info.name.endswith(".__main__"):
        continue
    importlib.import_module(info.name)
    out["modules"].append(info.name)


async def echo_roundtrip():
    async def handle(reader, writer):
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"ping\n")
    line = await reader.readline()
    writer.close()
    server.close()
    await server.wait_closed()
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(asyncio.sleep(0, i)) for i in range(50)]
    return line, [t.result() for t in tasks] == list(range(50))


out["uvloop"] = repr(uvloop.run(echo_roundtrip()))
out["msgspec"] = msgspec.json.decode(msgspec.json.encode({"gid": "g-1", "n": [1, 2]}))
reader = hiredis.Reader()
reader.feed(b"+OK\r\n")
out["hiredis"] = repr(reader.gets())
out["metrics"] = b"process_resident_memory_bytes" in prometheus_client.generate_latest()
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
with provider.get_tracer("probe").start_as_current_span("process default"):
    pass
out["spans"] = len(exporter.get_finished_spans())
structlog.get_logger().bind(gid="g-1")
with tempfile.TemporaryDirectory() as tmp:
    db = sqlite3.connect(os.path.join(tmp, "q.db"))
    out["sqlite_wal"] = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    db.execute("CREATE TABLE t (a)")
    db.commit()
    db.close()
out["ctypes_callback"] = ctypes.CFUNCTYPE(ctypes.c_int)(lambda: 7)()
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    out["wx_mmap"] = "allowed"
except OSError as exc:
    out["wx_mmap"] = errno.errorcode[exc.errno]
try:
    os.sched_setaffinity(0, os.sched_getaffinity(0))
    out["sched_setaffinity"] = "allowed"
except OSError as exc:
    out["sched_setaffinity"] = errno.errorcode[exc.errno]
print(json.dumps(out))
"""


def syscall_set(tool: str, group: str, cache: dict[str, set[str]]) -> set[str]:
    """The system calls of ``@group`` (nested groups expanded), as this systemd defines it."""
    if group not in cache:
        listing = subprocess.run([tool, "syscall-filter", group], capture_output=True, text=True, check=True).stdout
        names: set[str] = set()
        for line in listing.splitlines()[1:]:
            item = line.strip()
            if not item or item.startswith("#"):
                continue
            names |= syscall_set(tool, item, cache) if item.startswith("@") else {item}
        assert names, f"empty syscall group {group}"
        cache[group] = names
    return cache[group]


def unit_syscall_allow_list(tool: str, filters: list[str]) -> set[str]:
    """SystemCallFilter= lines, with systemd's rule: the first line sets the kind (allow
    list here), a later ``~`` line removes its calls from that list."""
    cache: dict[str, set[str]] = {}
    assert not filters[0].startswith("~"), "expected an allow list first"
    allowed: set[str] = set()
    for line in filters:
        deny = line.startswith("~")
        for item in line.lstrip("~").split():
            calls = syscall_set(tool, item, cache) if item.startswith("@") else {item}
            allowed = allowed - calls if deny else allowed | calls
    return allowed


def sandboxed(service: dict[str, list[str]], argv: list[str]) -> list[str]:
    """``argv`` run under the unit's SystemCallFilter=/SystemCallErrorNumber= and
    MemoryDenyWriteExecute= (skips without systemd-analyze or seccomp)."""
    tool = require_tool("systemd-analyze")
    if "Seccomp:" not in Path("/proc/self/status").read_text():
        pytest.skip("kernel without seccomp")
    allowed = unit_syscall_allow_list(tool, service["SystemCallFilter"])
    assert "sched_setaffinity" not in allowed  # removed by ~@resources
    assert "sethostname" not in allowed  # removed by ~@privileged
    assert one(service, "MemoryDenyWriteExecute") == "yes"
    errno_name = one(service, "SystemCallErrorNumber")
    assert errno_name == "EPERM"
    return [sys.executable, "-c", _LAUNCHER, json.dumps(sorted(allowed)), str(errno.EPERM), *argv]


@pytest.mark.slow
def test_runtime_dependencies_work_under_the_units_seccomp_filters(
    service: dict[str, list[str]],
) -> None:
    result = subprocess.run(
        sandboxed(service, [sys.executable, "-c", _PROBE]),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    # The filters are live ...
    assert out["wx_mmap"] == "EPERM"
    assert out["sched_setaffinity"] == "EPERM"
    # ... and the daemon's dependencies do their work under them.
    assert "swarmd.telemetry.metrics" in out["modules"] and "swarmd.dispatcher" in out["modules"]
    assert out["uvloop"] == repr((b"ping\n", True))
    assert out["msgspec"] == {"gid": "g-1", "n": [1, 2]}
    assert out["hiredis"] == repr(b"OK")
    assert out["metrics"] is True
    assert out["spans"] == 1
    assert out["sqlite_wal"] == "wal"
    assert out["ctypes_callback"] == 7


def http_get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            body: bytes = response.read()
            return body.decode()
    except OSError:
        return None


def wait_for(predicate: Callable[[], bool], what: str, daemon: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert daemon.poll() is None, f"daemon exited ({daemon.returncode}) while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.slow
def test_daemon_serves_and_drains_under_the_units_seccomp_filters(
    service: dict[str, list[str]], tmp_path: Path
) -> None:
    """`swarmd serve` itself, under the unit's filters: ready, a 50-agent swarm on uvloop,
    /metrics with process_*, a clean SIGTERM drain, a ledger that verifies."""
    swarmd = Path(sys.executable).parent / "swarmd"
    if not swarmd.exists():
        pytest.skip("swarmd console script not installed in this venv")
    state = tmp_path / "state"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = sandboxed(
        service,
        [str(swarmd), "serve", "--state-dir", str(state), "--metrics-listen", f"127.0.0.1:{port}"],
    )
    log = (tmp_path / "daemon.log").open("w")
    daemon = subprocess.Popen(
        argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    try:
        wait_for(lambda: http_get(f"{base}/readyz") is not None, "/readyz", daemon)
        # The daemon process itself carries both filters (they survive execve).
        status = Path(f"/proc/{daemon.pid}/status").read_text()
        assert re.search(r"^Seccomp:\s+2$", status, re.MULTILINE), status
        assert int(re.findall(r"^Seccomp_filters:\s+(\d+)$", status, re.MULTILINE)[0]) >= 2
        submit = subprocess.run(
            [
                *(str(swarmd), "submit", "--state-dir", str(state), "--agent", "echo"),
                *("--gid", "g-1", "--payload", '{"n": 1}', "--count", "50", "--swarm"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert submit.returncode == 0, submit.stderr
        done = 'swarmd_jobs_total{agent="echo",outcome="succeeded"} 50.0'
        wait_for(lambda: done in (http_get(f"{base}/metrics") or ""), "50 jobs succeeded", daemon)
        metrics = http_get(f"{base}/metrics") or ""
        assert 'loop="uvloop"' in metrics
        assert "process_resident_memory_bytes " in metrics
        assert "swarmd_ledger_index 49.0" in metrics
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(timeout=10)
        log.close()
    verify = subprocess.run(
        [str(swarmd), "ledger", "verify", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr + (tmp_path / "daemon.log").read_text()


def test_cffi_is_not_a_runtime_dependency() -> None:
    """cffi callbacks need write+execute memory, which MemoryDenyWriteExecute= forbids.

    Nothing the daemon installs (with its redis and otlp extras) may pull cffi in; if a
    dependency starts to, this fails, and it must be run under the filters above with a
    callback exercised before the unit can keep MemoryDenyWriteExecute=yes.
    """

    def key(requirement: str) -> str:
        return re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0].lower().replace("_", "-")

    def deps(name: str, seen: set[str], extras: frozenset[str] = frozenset()) -> set[str]:
        if key(name) in seen:
            return seen
        seen.add(key(name))
        try:
            reqs = requires(key(name)) or []
        except PackageNotFoundError:
            return seen
        for req in reqs:
            extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", req)
            if extra is None or extra.group(1) in extras:
                deps(req, seen)
        return seen

    installed = deps("swarmd", set(), frozenset({"redis", "otlp"}))
    assert {"uvloop", "msgspec", "prometheus-client"} <= installed
    assert "cffi" not in installed


# ------------------------------------------------------------------ the API socket unit
SOCKET_UNIT = ROOT / "deploy" / "systemd" / "swarmd.socket"


def test_the_api_socket_unit_verifies_and_makes_the_socket_clients_look_for() -> None:
    from swarmd.api.transport import SYSTEMD_SOCKET  # noqa: PLC0415
    from swarmd.runtime.api_server import SOCKET_MODE  # noqa: PLC0415

    result = analyze("verify", str(SOCKET_UNIT))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    sockets = parse_unit(SOCKET_UNIT.read_text())["Socket"]
    assert sockets["ListenStream"] == [str(SYSTEMD_SOCKET)]
    assert int(sockets["SocketMode"][0], 8) == SOCKET_MODE
    assert sockets["SocketGroup"] == ["swarmd-api"]
    assert sockets["Accept"] == ["no"]  # the daemon gets the listening socket itself
    service = parse_unit(UNIT.read_text())
    assert service["Install"]["Also"] == ["swarmd.socket"]
    # systemd gives the socket its group: the daemon needs none (and keeps exposure <= 1.0).
    assert "SupplementaryGroups" not in service["Service"]


@pytest.mark.slow
def test_workers_serve_and_drain_under_the_units_seccomp_filters(service: dict[str, list[str]], tmp_path: Path) -> None:
    """`swarmd serve --workers 2` under the unit's filters: the supervisor spawns its workers
    (socket pairs, PR_SET_PDEATHSIG, flock), both serve, the drain is clean."""
    swarmd = Path(sys.executable).parent / "swarmd"
    if not swarmd.exists():
        pytest.skip("swarmd console script not installed in this venv")
    state = tmp_path / "state"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = sandboxed(
        service,
        [str(swarmd), "serve", "--state-dir", str(state), "--metrics-listen", f"127.0.0.1:{port}", "--workers", "2"],
    )
    log_path = tmp_path / "daemon.log"
    with log_path.open("w") as log:
        daemon = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        wait_for(lambda: http_get(f"{base}/readyz") == "ok\n", "/readyz ok from both workers", daemon)
        submit = subprocess.run(
            [str(swarmd), "submit", "--state-dir", str(state), "--agent", "echo", "--gid", "g-1", "--count", "50"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert submit.returncode == 0, submit.stderr

        def succeeded() -> float:
            lines = (http_get(f"{base}/metrics") or "").splitlines()
            done = [line for line in lines if line.startswith('swarmd_jobs_total{agent="echo",outcome="succeeded"')]
            return sum(float(line.rsplit(" ", 1)[1]) for line in done)

        wait_for(lambda: succeeded() == 50, "50 jobs succeeded over both workers", daemon)
        assert "swarmd_workers_running 2.0" in (http_get(f"{base}/metrics") or "")
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0, log_path.read_text()
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(timeout=10)
    assert '"event":"worker_died"' not in log_path.read_text()
    assert '"event":"pdeathsig_unavailable"' not in log_path.read_text()  # prctl is in @process
