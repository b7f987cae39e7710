"""The canonical bytes of a job's ledger record, pinned.

A ledger entry's hash covers the exact bytes of its record, so the record of a given outcome
must never change by a byte: chains written by earlier versions have to keep verifying. Each
case gives the fields of one representative outcome and the literal bytes the ledger stores
for it (sorted keys, compact JSON, fields that are None left out, numbers as msgspec writes
them).
"""

from __future__ import annotations

from typing import Any

import pytest

from swarmd.ledger.records import OutcomeRecord
from swarmd.model import Outcome

CASES: dict[str, tuple[dict[str, Any], bytes]] = {
    "success with a result": (
        {
            "job_id": "j-1",
            "gid": "GID-1",
            "agent": "echo",
            "outcome": Outcome.SUCCEEDED,
            "attempt": 1,
            "finished_at": 1700000000.123456,
            "result": {"agent_gid": "GID-1", "n": [1, 2.5, None, "x"]},
            "duration_s": 0.0012345678,
            "reserved_at": 1699999999.5,
            "started_at": 1699999999.75,
        },
        b'{"agent":"echo","agent_gid":"GID-1","attempt":1,"duration_s":0.0012345678,'
        b'"finished_at":1700000000.123456,"job_id":"j-1","outcome":"succeeded","reserved_at":1699999999.5,'
        b'"result":{"agent_gid":"GID-1","n":[1,2.5,null,"x"]},"started_at":1699999999.75}',
    ),
    "failure with an error dict": (
        {
            "job_id": "j-2",
            "gid": "GID-2",
            "agent": "flaky",
            "outcome": Outcome.DEAD_LETTERED,
            "attempt": 3,
            "finished_at": 1700000001.0,
            "error": {
                "type": "RuntimeError",
                "message": 'boom "quoted" \u00e9',
                "attempt": 3,
                "permanent": False,
                "at": 1700000000.999,
            },
            "duration_s": 1.5,
            "reserved_at": 1700000000.0,
            "started_at": 1700000000.25,
        },
        b'{"agent":"flaky","agent_gid":"GID-2","attempt":3,"duration_s":1.5,"error":{"at":1700000000.999,'
        b'"attempt":3,"message":"boom \\"quoted\\" \xc3\xa9","permanent":false,"type":"RuntimeError"},'
        b'"finished_at":1700000001.0,"job_id":"j-2","outcome":"dead_lettered","reserved_at":1700000000.0,'
        b'"started_at":1700000000.25}',
    ),
    "identity violation": (
        {
            "job_id": "j-3",
            "gid": "GID-3",
            "agent": "liar",
            "outcome": Outcome.SUCCEEDED,
            "attempt": 1,
            "finished_at": 1e9,
            "identity_violation": "result names GID SOMEONE-ELSE, not GID-3",
            "result": {"agent_gid": "SOMEONE-ELSE"},
            "duration_s": 0.0,
            "reserved_at": 999999999.0,
            "started_at": 999999999.0,
        },
        b'{"agent":"liar","agent_gid":"GID-3","attempt":1,"duration_s":0.0,"finished_at":1000000000.0,'
        b'"identity_violation":"result names GID SOMEONE-ELSE, not GID-3","job_id":"j-3","outcome":"succeeded",'
        b'"reserved_at":999999999.0,"result":{"agent_gid":"SOMEONE-ELSE"},"started_at":999999999.0}',
    ),
    "swarm member cancelled while running": (
        {
            "job_id": "j-4",
            "gid": "GID-4",
            "agent": "echo",
            "outcome": Outcome.CANCELLED,
            "attempt": 2,
            "finished_at": 1700000002.25,
            "swarm_id": "swarm-1",
            "error": {"type": "Cancelled", "message": "cancelled while running"},
            "duration_s": 3e-05,
            "reserved_at": 1700000002.0,
            "started_at": None,
        },
        b'{"agent":"echo","agent_gid":"GID-4","attempt":2,"duration_s":0.00003,'
        b'"error":{"message":"cancelled while running","type":"Cancelled"},"finished_at":1700000002.25,'
        b'"job_id":"j-4","outcome":"cancelled","reserved_at":1700000002.0,"swarm_id":"swarm-1"}',
    ),
    "dead letter with no timings": (
        {
            "job_id": "j-5",
            "gid": "unknown",
            "agent": "unknown",
            "outcome": Outcome.DEAD_LETTERED,
            "attempt": 1,
            "finished_at": 1700000003.0,
            "error": {
                "type": "malformed",
                "message": "undecodable job",
                "attempt": 1,
                "permanent": True,
                "at": 1700000003.0,
            },
            "reserved_at": 1700000002.5,
        },
        b'{"agent":"unknown","agent_gid":"unknown","attempt":1,"error":{"at":1700000003.0,"attempt":1,'
        b'"message":"undecodable job","permanent":true,"type":"malformed"},"finished_at":1700000003.0,'
        b'"job_id":"j-5","outcome":"dead_lettered","reserved_at":1700000002.5}',
    ),
    "queued swarm member cancelled by its backend": (
        {
            "job_id": "j-6",
            "gid": "GID-6",
            "agent": "echo",
            "outcome": "cancelled",
            "attempt": 0,
            "finished_at": 1700000004.0,
            "swarm_id": "s",
            "error": {"type": "Cancelled", "message": "swarm failed"},
        },
        b'{"agent":"echo","agent_gid":"GID-6","attempt":0,"error":{"message":"swarm failed","type":"Cancelled"},'
        b'"finished_at":1700000004.0,"job_id":"j-6","outcome":"cancelled","swarm_id":"s"}',
    ),
    "falsy values are kept, only None is left out": (
        {
            "job_id": "j-7",
            "gid": "GID-7",
            "agent": "echo",
            "outcome": Outcome.SUCCEEDED,
            "attempt": 1,
            "finished_at": 0.0,
            "result": 0,
            "duration_s": 0.0,
            "reserved_at": 0.0,
            "started_at": 0.0,
        },
        b'{"agent":"echo","agent_gid":"GID-7","attempt":1,"duration_s":0.0,"finished_at":0.0,"job_id":"j-7",'
        b'"outcome":"succeeded","reserved_at":0.0,"result":0,"started_at":0.0}',
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_job_record_has_exactly_the_canonical_bytes_of_earlier_versions(case: str) -> None:
    fields, expected = CASES[case]
    assert OutcomeRecord(**fields).encode() == expected
