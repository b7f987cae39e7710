"""What the CLI tells people counts correctly in English (``1 entry``, ``2 entries``, ``1 dead
letter``), says ``empty`` rather than ``last index None``, and shows a recorded error readably."""

from __future__ import annotations

import pytest

from swarmd.cli.output import describe_error, plural
from swarmd.ledger.chain import VerifyReport


@pytest.mark.parametrize(
    ("report", "summary"),
    [
        (VerifyReport(True, 0, None, "0" * 64), "ledger ok: empty"),
        (VerifyReport(True, 1, 0, "ab" * 32), "ledger ok: 1 entry, last index 0, head abababababababab"),
        (VerifyReport(True, 2, 1, "ab" * 32), "ledger ok: 2 entries, last index 1, head abababababababab"),
    ],
)
def test_the_verify_summary_counts_its_entries_right(report: VerifyReport, summary: str) -> None:
    assert report.summary() == summary


def test_plurals() -> None:
    assert [plural(n, "dead letter") for n in (0, 1, 2)] == ["0 dead letters", "1 dead letter", "2 dead letters"]


def test_a_recorded_error_reads_as_type_message_and_the_rest() -> None:
    assert describe_error({"type": "Timeout", "message": "timed out after 5s"}) == "Timeout: timed out after 5s"
    assert describe_error({"message": "no type"}) == "no type"
    assert describe_error({"type": "Boom", "message": "x", "attempt": 3, "permanent": False}) == (
        "Boom: x (attempt=3 permanent=False)"
    )
    assert describe_error({}) == "-"
