"""Each bounded label set of the metrics is the value set of one vocabulary enum, and keeps the
exact values dashboards, alerts and recorded series already use."""

from __future__ import annotations

import enum

import pytest

from swarmd.model import CircuitState, JobState, Outcome, RejectReason
from swarmd.policies import breaker
from swarmd.queue.base import WakeReason
from swarmd.telemetry import metrics

#: (label set, its enum, the published values in order).
LABEL_SETS: dict[str, tuple[object, set[str], tuple[str, ...]]] = {
    "OUTCOMES": (
        metrics.OUTCOMES,
        {outcome.value for outcome in Outcome},
        ("succeeded", "failed", "retried", "timed_out", "dead_lettered", "cancelled"),
    ),
    "QUEUE_STATES": (
        metrics.QUEUE_STATES,
        {state.value for state in JobState} - {JobState.DONE.value, JobState.AWAITING.value},
        ("ready", "delayed", "leased", "dead"),
    ),
    "REJECT_REASONS": (
        metrics.REJECT_REASONS,
        {reason.value for reason in RejectReason},
        ("malformed", "unknown_agent", "oversized", "poison"),
    ),
    "CIRCUIT_STATES": (
        tuple(metrics.CIRCUIT_STATES),
        {state.value for state in CircuitState},
        ("closed", "half_open", "open"),
    ),
}


@pytest.mark.parametrize("name", list(LABEL_SETS))
def test_each_label_set_equals_the_values_of_its_enum(name: str) -> None:
    labels, enum_values, published = LABEL_SETS[name]
    assert isinstance(labels, tuple)
    assert set(labels) == enum_values
    assert labels == published
    # Plain text on the wire: a label value renders the same whether it came from the enum or not.
    assert all(type(str(label)) is str and str(label) == label for label in labels)


def test_the_circuit_gauge_keeps_its_numbers() -> None:
    assert metrics.CIRCUIT_STATES == {"closed": 0, "half_open": 1, "open": 2}
    assert [metrics.CIRCUIT_STATES[state] for state in CircuitState] == [0, 1, 2]


def test_the_breaker_speaks_the_vocabulary_circuit_state() -> None:
    assert breaker.CircuitState is CircuitState


@pytest.mark.parametrize("vocabulary", [Outcome, JobState, CircuitState, RejectReason, WakeReason])
def test_the_vocabulary_enums_are_str_enums(vocabulary: type[enum.Enum]) -> None:
    assert issubclass(vocabulary, enum.StrEnum)


def test_a_wake_reason_reads_back_from_its_byte() -> None:
    assert [WakeReason.from_wire(reason.value.encode()) for reason in WakeReason] == list(WakeReason)
    assert WakeReason.from_wire(b"?") is WakeReason.WORK
