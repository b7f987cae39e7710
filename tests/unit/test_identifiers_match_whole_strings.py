"""Identifiers (job id, GID, agent name, idempotency key, queue, Redis prefix) are matched as
whole strings: a trailing newline or any control character is refused, never stored."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmd.cli.commands import main as cli_main
from swarmd.config import load_settings
from swarmd.errors import ConfigError, JobValidationError
from swarmd.model import new_job

CONTROL = st.sampled_from([chr(c) for c in [*range(0x20), 0x7F]])
VALID: dict[str, Any] = {"job_id": "J1", "gid": "G1", "agent": "echo", "idempotency_key": "key-1"}


@given(field=st.sampled_from(sorted(VALID)), control=CONTROL, at_end=st.booleans())
def test_job_identifiers_with_a_control_character_are_refused(field: str, control: str, at_end: bool) -> None:
    value = VALID[field] + control if at_end else VALID[field][:1] + control + VALID[field][1:]
    with pytest.raises(JobValidationError) as error:
        new_job(**{**VALID, field: value})
    assert error.value.field == {"job_id": "id"}.get(field, field)


def test_the_same_identifiers_without_them_are_accepted() -> None:
    job = new_job(**VALID)
    assert (job.id, job.gid, job.agent, job.idempotency_key) == ("J1", "G1", "echo", "key-1")


@given(key=st.sampled_from(["queue", "redis_prefix"]), control=CONTROL)
def test_config_names_with_a_control_character_are_refused(key: str, control: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(flags={key: "name" + control}, environ={})
    assert error.value.key == key


def test_a_job_id_argument_with_a_trailing_newline_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli_main(["status", "--state-dir", "/nonexistent-swarmd-test", "J1\n"])
    assert exit_.value.code == 2
    assert "J1" in capsys.readouterr().err
