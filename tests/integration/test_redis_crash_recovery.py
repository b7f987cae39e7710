"""Issue 9, items 2 and 3: break a Redis deployment on purpose and count what was lost.

Both tests run on a redis-server of their own (AOF with ``appendfsync always``, a unix socket
and its data in tmp_path, killed by its pid), never on the shared one. The checks are the ones
Jepsen's queue checkers make: nothing acknowledged is lost, nothing is recorded twice, nothing
unexpected appears, and the ledger stays a verified gap-free chain.

- **A daemon killed anywhere**: two daemons drain 2,000 jobs while one of them is killed with
  SIGKILL at 10 seeded random points of the run (a ledger position each) and restarted.
- **Redis killed under load**: while a producer submits and two daemons drain, the Redis server
  itself is killed with SIGKILL and restarted on the same directory and socket. Every submit
  that returned is recorded once; every ledger entry a client read before the kill is still
  there with the same index and hash; the daemons turn unready, then ready again by themselves.

The seed is printed (run with ``-s`` to see it) and ``SWARMD_CRASH_SEED`` replays it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.harness import wait_until
from support.redis_deployment import Deployment, assert_clean, readiness, start_all, wait_readiness
from support.services import require_tool

from swarmd.client import Client
from swarmd.config import Settings
from swarmd.errors import BackendUnavailable
from swarmd.model import new_job_id

pytestmark = [pytest.mark.slow, pytest.mark.redis]

PREFIX = "crash"


class AofRedis:
    """A redis-server of this test's own: AOF fsynced at every write, on a unix socket in
    ``root`` (no TCP port); SIGKILLed and restarted on the same directory and socket."""

    def __init__(self, root: Path) -> None:
        self.binary = require_tool("redis-server")
        self.root = root
        self.sock = root / "redis.sock"
        self.url = f"unix://{self.sock}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> AofRedis:
        self.starts += 1
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                "0",
                "--unixsocket",
                str(self.sock),
                "--unixsocketperm",
                "700",
                "--dir",
                str(self.root),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--logfile",
                str(self.root / f"redis-{self.starts}.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._answers, timeout=30, what="redis-server to load its AOF and answer PING", step=0.05)
        return self

    def _answers(self) -> bool:
        import redis  # noqa: PLC0415 - the optional extra; require_tool runs first

        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"redis-server exited {self.proc.returncode}")
        try:
            with redis.Redis(unix_socket_path=str(self.sock), socket_timeout=1) as client:
                return bool(client.ping())
        except redis.RedisError:  # not listening yet, or still LOADING
            return False

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@contextlib.contextmanager
def aof_redis(tmp_path: Path) -> Iterator[tuple[AofRedis, Deployment]]:
    pytest.importorskip("redis")
    server = AofRedis(tmp_path)
    deployment = Deployment(server.url, PREFIX, tmp_path)
    try:
        yield server.start(), deployment
    finally:
        deployment.kill_all()
        server.stop()


class Ledger:
    """Reads the ``ledger`` list straight from Redis (cheap enough to poll every few ms)."""

    def __init__(self, url: str) -> None:
        import redis  # noqa: PLC0415

        self._redis = redis
        self._client = redis.Redis.from_url(url, socket_timeout=5)
        self.key = f"{{{PREFIX}}}:ledger"

    def length(self) -> int:
        """-1 while Redis is away."""
        try:
            return int(self._client.llen(self.key))
        except self._redis.RedisError:
            return -1

    def reached(self, n: int) -> bool:
        return self.length() >= n

    def read(self) -> list[tuple[int, str, str]]:
        """(index, job id, hash) of every entry, in one LRANGE."""
        raws: Any = self._client.lrange(self.key, 0, -1)
        # packed as hash(64) prev_hash(64) len(job_id)(2 hex) job_id record (swarmd.redis_queue)
        return [(i, raw[130 : 130 + int(raw[128:130], 16)].decode(), raw[:64].decode()) for i, raw in enumerate(raws)]

    def close(self) -> None:
        self._client.close()


def seeded() -> random.Random:
    seed = int(os.environ.get("SWARMD_CRASH_SEED") or random.randrange(2**32))
    print(f"seed {seed} (SWARMD_CRASH_SEED={seed} replays it)")
    return random.Random(str(seed))  # a str seed is hashed: nearby seeds give unrelated runs


def producer_client(deployment: Deployment) -> Client:
    return Client(settings=Settings(backend="redis", redis_url=deployment.url, redis_prefix=PREFIX))


def sleep_specs(rng: random.Random, n: int) -> list[dict[str, Any]]:
    """``n`` sleep jobs of 0-30 ms, ids chosen here so that a submit that raised is still known."""
    return [
        {"agent": "sleep", "gid": f"GID-{i}", "payload": {"seconds": rng.uniform(0, 0.03)}, "job_id": new_job_id()}
        for i in range(n)
    ]


# -- item 2: one of two daemons killed at random points -----------------------------------------
ROUNDS = 10
PER_ROUND = 200


@pytest.mark.timeout(180)
def test_two_daemons_one_killed_at_ten_random_points_every_job_recorded_exactly_once(tmp_path: Path) -> None:
    rng = seeded()
    with aof_redis(tmp_path) as (_, dep):
        ledger = Ledger(dep.url)
        env = {"SWARMD_LEASE_SECONDS": "1"}  # a dead life's leases come back after 1 s
        victim, survivor = daemons = [dep.daemon("--max-concurrent", "16", env=env) for _ in range(2)]
        start_all(daemons)
        ids: list[str] = []
        points: list[int] = []
        with producer_client(dep) as client:
            for _ in range(ROUNDS):
                ids += client.submit_many(sleep_specs(rng, PER_ROUND)).job_ids
                # a ledger position among the jobs not yet recorded: the victim is mid-run there
                point = rng.randint(ledger.length() + 1, len(ids) - 1)
                wait_until(functools.partial(ledger.reached, point), timeout=60, what=f"ledger at {point}", step=0.002)
                victim.kill9()
                points.append(ledger.length())
                victim.start()
        print(f"killed at ledger lengths {points}")
        wait_until(functools.partial(ledger.reached, len(ids)), timeout=60, what=f"{len(ids)} entries", step=0.05)
        ledger.close()
        entries = assert_clean(dep, ids)  # exactly once, gap-free, `ledger verify` ok, nothing queued or leased
        assert len(entries) == ROUNDS * PER_ROUND
        assert {entry["outcome"] for entry in entries} == {"succeeded"}
        # the kills caught jobs in flight, which ran again elsewhere and were still recorded once
        assert any(entry["attempt"] >= 2 for entry in entries), "no kill caught a job in flight"
        assert victim.starts == ROUNDS + 1
        for daemon in daemons:
            assert readiness(daemon)[0] == 200
            assert daemon.stop() == 0
        assert survivor.starts == 1


# -- item 3: Redis itself killed under load ------------------------------------------------------
TOTAL = 4000
BATCH = 25


class Producer(threading.Thread):
    """Submits TOTAL jobs in batches of BATCH (about 1,250 jobs/s), through Redis going away:
    a submit that returned is *acknowledged*; one that raised is *uncertain* (it may have been
    written before the connection broke)."""

    def __init__(self, deployment: Deployment, rng: random.Random) -> None:
        super().__init__(name="producer", daemon=True)
        self.deployment = deployment
        self.rng = rng
        self.acked: list[str] = []
        self.uncertain: list[str] = []
        self.failures = 0
        self.error: BaseException | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            with producer_client(self.deployment) as client:
                while len(self.acked) + len(self.uncertain) < TOTAL and not self.stopping.is_set():
                    specs = sleep_specs(self.rng, BATCH)
                    try:
                        self.acked += client.submit_many(specs).job_ids
                    except BackendUnavailable:
                        self.uncertain += [spec["job_id"] for spec in specs]
                        self.failures += 1
                    self.stopping.wait(0.02)  # pacing, not a wait for a condition
        except BaseException as exc:  # handed to the test thread
            self.error = exc


@pytest.mark.timeout(180)
def test_redis_killed_under_load_and_restarted_loses_nothing_acknowledged(tmp_path: Path) -> None:
    rng = seeded()
    with aof_redis(tmp_path) as (server, dep):
        ledger = Ledger(dep.url)
        daemons = [dep.daemon("--max-concurrent", "16", env={"SWARMD_LEASE_SECONDS": "2"}) for _ in range(2)]
        start_all(daemons)  # AOF is on: ready without --allow-volatile-redis
        kill_at = rng.randint(TOTAL // 8, TOTAL // 3)
        down_for = rng.uniform(1.0, 3.0)  # around the 2 s lease: some leases expire while Redis is away
        producer = Producer(dep, rng)
        producer.start()
        try:
            wait_until(functools.partial(ledger.reached, kill_at), timeout=60, what=f"ledger at {kill_at}", step=0.002)
            wait_until(lambda: all(d.metrics().get("swarmd_agents_in_flight", 0) > 0 for d in daemons), what="load")
            read_before = ledger.read()  # what a client was told, the instant before the kill
            server.kill9()
            killed = time.monotonic()
            acked_at_kill = len(producer.acked)
            print(f"Redis killed at ledger length {len(read_before)} for {down_for:.1f} s; {acked_at_kill} acked")
            ledger.close()
            for daemon in daemons:
                wait_readiness(daemon, 503, timeout=15)
                assert daemon.get("/healthz")[0] == 200  # not ready, still alive
            wait_until(lambda: producer.failures > 0, timeout=15, what="a submit to fail")
            wait_until(lambda: time.monotonic() - killed >= down_for, timeout=15, what=f"{down_for:.1f} s down")
            server.start()
            for daemon in daemons:
                wait_readiness(daemon, 200, timeout=30)  # reconnected by itself
            producer.join(timeout=60)
        finally:
            producer.stopping.set()
            producer.join(timeout=30)
        assert producer.error is None, f"the producer failed: {producer.error!r}"
        acked, uncertain = set(producer.acked), set(producer.uncertain)
        print(f"{len(acked)} submits acknowledged, {len(uncertain)} uncertain ({producer.failures} failed calls)")
        assert len(acked) > acked_at_kill, "no submit succeeded after the restart"

        ledger = Ledger(dep.url)
        with producer_client(dep) as checker:
            quiet = {"ready": 0, "delayed": 0, "leased": 0, "dead": 0}
            wait_until(
                lambda: ledger.length() >= len(acked) and checker.counts() == quiet,
                timeout=60,
                what="every acknowledged job recorded and nothing left queued",
                step=0.1,
            )
        ledger.close()
        entries = dep.ledger()
        seen = [entry["job_id"] for entry in entries]
        assert len(seen) == len(set(seen)), "a job appears twice in the ledger"
        assert [entry["index"] for entry in entries] == list(range(len(entries)))
        assert not acked - set(seen), f"{len(acked - set(seen))} acknowledged jobs lost"
        assert not set(seen) - acked - uncertain, "the ledger holds jobs nobody submitted"
        assert {entry["outcome"] for entry in entries} == {"succeeded"}
        for index, job_id, digest in read_before:
            assert (entries[index]["job_id"], entries[index]["hash"]) == (job_id, digest), f"entry {index} changed"
        verify = dep.cli("ledger", "verify")
        assert verify.stdout.startswith(f"ledger ok: {len(entries)} entries"), verify.stdout
        assert dep.cli_json("jobs") == []
        for daemon in daemons:
            assert daemon.stop() == 0
