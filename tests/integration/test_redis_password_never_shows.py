"""A Redis that needs a password: swarmd connects with the password in its URL, and the
password never appears in the daemon's log, its metrics or any error message."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.harness import Daemon, free_port, swarmd, wait_until
from support.services import require_tool

PASSWORD = "s3cret-Pa55word"


@pytest.fixture
def guarded_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server of this test's own, on a free loopback port, with requirepass and AOF."""
    server = require_tool("redis-server")
    port = free_port()
    data = tmp_path / "redis"
    data.mkdir()
    proc = subprocess.Popen(
        [server, "--bind", "127.0.0.1", "--port", str(port), "--requirepass", PASSWORD, "--save", "",
         "--appendonly", "yes", "--dir", str(data)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        cli = require_tool("redis-cli")
        wait_until(
            lambda: (
                subprocess.run(
                    [cli, "-p", str(port), "-a", PASSWORD, "--no-auth-warning", "ping"],
                    capture_output=True,
                    text=True,
                    check=False,
                ).stdout.strip()
                == "PONG"
            ),
            what="the guarded redis-server",
        )
        yield f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_password_in_the_url_works_and_is_never_shown(tmp_path: Path, guarded_redis: str) -> None:
    args = ["--backend", "redis", "--redis-url", guarded_redis, "--redis-prefix", "pw-test"]
    daemon = Daemon(tmp_path / "state", *args).start()
    try:
        submitted = swarmd("submit", *args, "--agent", "echo", "--gid", "G1", "--payload", '"hi"')
        job_id = submitted.stdout.strip()
        wait_until(lambda: '"succeeded"' in swarmd("status", "--json", *args, job_id).stdout, what="the job to succeed")
        metrics = daemon.get("/metrics")[1]
    finally:
        assert daemon.stop() == 0
    assert PASSWORD not in daemon.log()
    assert PASSWORD not in metrics
    assert PASSWORD not in submitted.stderr


def test_a_wrong_password_is_a_clear_error_that_does_not_repeat_it(guarded_redis: str) -> None:
    wrong = guarded_redis.replace(PASSWORD, "not-the-password")
    result = swarmd("submit", "--backend", "redis", "--redis-url", wrong, "--agent", "echo", "--gid", "G1", check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "not-the-password" not in result.stderr and PASSWORD not in result.stderr
    assert "127.0.0.1" in result.stderr


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server of this test's own speaking only TLS (a self-signed certificate made here),
    with a password and AOF."""
    server, openssl = require_tool("redis-server"), require_tool("openssl")
    tls = tmp_path / "tls"
    tls.mkdir()
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(tls / "key.pem"), "-out", str(tls / "cert.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    proc = subprocess.Popen(
        [server, "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(tls / "cert.pem"),
         "--tls-key-file", str(tls / "key.pem"), "--tls-ca-cert-file", str(tls / "cert.pem"),
         "--tls-auth-clients", "no", "--bind", "127.0.0.1", "--requirepass", PASSWORD, "--save", "",
         "--appendonly", "yes", "--dir", str(tls)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={tls / 'cert.pem'}"
        probe = ["--backend", "redis", "--redis-url", url, "--redis-prefix", "tls-probe"]
        wait_until(lambda: swarmd("jobs", *probe, check=False).returncode == 0, what="the TLS redis-server")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_rediss_url_speaks_tls_and_keeps_its_password_out_of_sight(tmp_path: Path, tls_redis: str) -> None:
    args = ["--backend", "redis", "--redis-url", tls_redis, "--redis-prefix", "tls-test"]
    daemon = Daemon(tmp_path / "state", *args).start()
    try:
        job_id = swarmd("submit", *args, "--agent", "echo", "--gid", "G1").stdout.strip()
        wait_until(lambda: '"succeeded"' in swarmd("status", "--json", *args, job_id).stdout, what="the job to succeed")
    finally:
        assert daemon.stop() == 0
    assert PASSWORD not in daemon.log()
