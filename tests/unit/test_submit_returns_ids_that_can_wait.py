"""What submit and submit_many return stays what code already uses (a str equal to the job id;
the list of ids, with job_ids and swarm_id) while it can also wait for the results."""

from __future__ import annotations

import pickle
from typing import Any

import msgspec

from swarmd import JobHandle, Submitted
from swarmd.ledger.records import OutcomeRecord
from swarmd.model import encode_job, new_job


class Recorder:
    """Stands in for a client: records what the handles ask of it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, Any, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        def call(first: Any = None, second: Any = None, **kwargs: Any) -> str:
            self.calls.append((name, first, second, kwargs))
            return name

        return call


def test_a_job_handle_is_its_id_and_waits_through_its_client() -> None:
    client = Recorder()
    handle = JobHandle("abc123", client)
    assert handle == "abc123" and isinstance(handle, str) and hash(handle) == hash("abc123")
    assert f"{handle}" == "abc123" and str(handle) == "abc123"
    restored = pickle.loads(pickle.dumps(handle))
    assert restored == "abc123" and type(restored) is str
    assert handle.wait(5) == "wait" and handle.result() == "result"
    assert client.calls == [("wait", "abc123", 5, {}), ("result", "abc123", None, {})]


def test_submitted_is_the_list_of_ids_with_the_swarm_id() -> None:
    client = Recorder()
    submitted = Submitted(["a", "b"], "s1", client)
    assert submitted == ["a", "b"] and submitted.job_ids == ["a", "b"] and submitted.swarm_id == "s1"
    assert list(submitted) == ["a", "b"] and len(submitted) == 2 and submitted[0] == "a"
    assert msgspec.json.encode(submitted) == b'["a","b"]'
    assert submitted.wait(3) == "wait_many" and submitted.results() == "results_of"
    assert submitted.as_completed() == "as_completed"
    assert [call[0] for call in client.calls] == ["wait_many", "results_of", "as_completed"]
    assert all(call[-1].get("check_ids") is False for call in client.calls)


def test_a_job_handle_inside_a_payload_or_a_record_is_encoded_as_its_id() -> None:
    handle = JobHandle("abc123")
    assert encode_job(new_job(agent="echo", gid="G", payload={"parent": handle})).count(b'"parent":"abc123"') == 1
    record = OutcomeRecord(
        job_id="j", gid="G", agent="echo", outcome="succeeded", attempt=1, finished_at=1.0, result=[handle]
    )
    assert b'"result":["abc123"]' in record.encode()
