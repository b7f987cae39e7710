"""Fuzzing the edges where outside data enters swarmd (hypothesis, bounded and fast).

Job decoding, job building, config parsing, traceparent parsing and the CLI's arguments: for
any input, only the documented error type of that edge may escape, and its message names the
field, key or argument at fault. Anything else (TypeError, UnicodeEncodeError, OverflowError,
a traceback out of the CLI) is a bug to fix at its cause.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import math
import re
import string
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from swarmd.cli import commands as cli
from swarmd.config import Settings, load_settings
from swarmd.errors import ConfigError, JobValidationError
from swarmd.model import (
    MAX_PAYLOAD_BYTES,
    MAX_PAYLOAD_DEPTH,
    Job,
    decode_job,
    decode_reserved,
    draft_job,
    encode_job,
    new_job,
    seal,
)
from swarmd.telemetry.tracing import parse_traceparent

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- values ---------------------------------------------------------------------------------
# Any text, lone surrogates included: they reach us from argv (surrogateescape) and from JSON.
any_text = st.text(max_size=40)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | any_text
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)
# What a caller might pass as a field value: JSON-ish data and a few things that are not.
anything = json_values | st.binary(max_size=8) | st.tuples(st.integers()) | st.builds(object) | st.sets(st.integers())

JOB_FIELDS = [field.name for field in msgspec.structs.fields(Job)]
VALID = encode_job(new_job(agent="echo", gid="GID-1", payload={"n": 1}, swarm_id="s1", swarm_size=2))


def _field_named(exc: JobValidationError, allowed: set[str]) -> None:
    assert exc.field in allowed, f"{exc.field!r} named for {allowed}: {exc}"
    assert f"invalid job: {exc.field}: " in str(exc)
    assert exc.reason


# -- job decoding ---------------------------------------------------------------------------
@FAST
@given(st.binary(max_size=300) | any_text)
@example(b'{"id": "a", "gid": "g", "agent": "x", "payload": ' + b"[" * 200 + b"]" * 200 + b"}")
@example('{"id": "a\ud800", "gid": "g", "agent": "x"}')
@example(b"[" * 100_000)
def test_decode_job_of_arbitrary_input_raises_only_job_validation_error(raw: bytes | str) -> None:
    try:
        job = decode_job(raw)
    except JobValidationError as exc:
        assert exc.field and str(exc).startswith("invalid job: ")
        return
    assert isinstance(job, Job)


# JSON proper: msgspec would write NaN and infinity as null, which is another document.
finite_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)


@FAST
@given(st.sampled_from([*JOB_FIELDS, "extra", "payload"]), finite_json)
def test_decode_job_of_a_mutated_valid_job_names_the_mutated_field(key: str, value: Any) -> None:
    document = msgspec.json.decode(VALID)
    document[key] = value
    raw = msgspec.json.encode(document) if _utf8(document) else None
    assume(raw is not None)
    assert raw is not None
    try:
        job = decode_job(raw)
    except JobValidationError as exc:
        _field_named(exc, {key})
        return
    assert getattr(job, key) == value  # accepted means kept as given, never silently altered


@FAST
@given(st.integers(min_value=MAX_PAYLOAD_DEPTH + 1, max_value=2000))
def test_decode_job_refuses_a_payload_nested_past_the_cap(depth: int) -> None:
    raw = b'{"id": "a", "gid": "g", "agent": "x", "payload": ' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(JobValidationError) as caught:
        decode_job(raw)
    assert caught.value.field == "payload"


def test_decode_job_refuses_an_oversized_payload() -> None:
    body = {"id": "a", "gid": "g", "agent": "x", "payload": "x" * (MAX_PAYLOAD_BYTES + 1)}
    with pytest.raises(JobValidationError) as caught:
        decode_job(msgspec.json.encode(body))
    assert caught.value.field == "payload" and "over the limit" in str(caught.value)
    body["payload"] = "x" * (MAX_PAYLOAD_BYTES - 2)  # exactly at the limit once quoted: accepted
    assert decode_job(msgspec.json.encode(body)).payload == body["payload"]


@FAST
@given(st.integers(min_value=1, max_value=10_000))
def test_a_reserved_job_carries_its_reservations_attempt_and_is_otherwise_the_stored_one(attempt: int) -> None:
    stored = new_job(agent="echo", gid="GID-1", payload={"n": [1, 2.5, "x"]}, max_attempts=3)
    raw = encode_job(stored)
    job = decode_reserved(raw, attempt)
    assert job.attempt == attempt
    assert msgspec.structs.replace(job, attempt=stored.attempt) == stored
    with pytest.raises(JobValidationError):  # refused exactly as decode_job refuses
        decode_reserved(raw.replace(b'"agent"', b'"agnt"'), attempt)


def _utf8(value: Any) -> bool:
    try:
        msgspec.json.encode(value)
    except (UnicodeEncodeError, msgspec.EncodeError, OverflowError):
        return False
    return True


# -- building jobs --------------------------------------------------------------------------
BUILD_FIELDS = {
    "agent": st.just("echo") | anything,
    "gid": st.just("GID-1") | anything,
    "payload": json_values | anything,
    "priority": st.integers() | anything,
    "max_attempts": st.none() | st.integers() | anything,
    "timeout": st.none() | st.floats() | anything,
    "delay": st.floats() | st.integers() | anything,
    "not_before": st.none() | st.floats() | anything,
    "swarm_id": st.none() | any_text | anything,
    "swarm_size": st.none() | st.integers() | anything,
    "fail_fast": st.booleans() | anything,
    "idempotency_key": st.none() | any_text | anything,
    "traceparent": st.none() | any_text | anything,
    "job_id": st.none() | any_text | anything,
}
# The name each argument of draft_job has in the job (and so in the error).
FIELD_OF = {"job_id": "id", "delay": "delay"}


@FAST
@given(st.fixed_dictionaries({}, optional=BUILD_FIELDS))
def test_new_job_with_arbitrary_field_values_raises_only_job_validation_error(fields: dict[str, Any]) -> None:
    fields.setdefault("agent", "echo")
    fields.setdefault("gid", "GID-1")
    given_names = {FIELD_OF.get(name, name) for name in fields}
    try:
        job = new_job(**fields)
    except JobValidationError as exc:
        _field_named(exc, given_names | {"not_before"})  # delay is turned into not_before
        return
    # Accepted: every field is what was given (nothing silently coerced or dropped).
    for name, value in fields.items():
        if name in ("delay", "job_id") or (name == "not_before" and value is None):
            continue
        kept = getattr(job, name)
        if name == "payload":  # tuples are JSON arrays: compare the data, not the Python type
            assert msgspec.json.encode(kept) == msgspec.json.encode(value)
        else:
            assert kept == value, name
    assert decode_job(encode_job(job)) == job


@FAST
@given(st.lists(st.fixed_dictionaries({}, optional=BUILD_FIELDS), min_size=1, max_size=4))
def test_seal_of_a_batch_names_the_field_and_the_job(batch: list[dict[str, Any]]) -> None:
    drafts = []
    for fields in batch:
        fields.setdefault("agent", "echo")
        fields.setdefault("gid", "GID-1")
        try:
            drafts.append(draft_job(**fields))
        except JobValidationError:
            return  # refused while drafting: covered by the test above
    try:
        sealed = seal(drafts)
    except JobValidationError as exc:
        assert exc.field in {*JOB_FIELDS, "$"} and exc.field != "$", str(exc)
        if len(drafts) > 1:
            assert f"of {len(drafts)})" in str(exc)
        return
    assert len(sealed) == len(drafts)


# -- config ---------------------------------------------------------------------------------
SETTING_KEYS = [field.name for field in msgspec.structs.fields(Settings)]
toml_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=20)
toml_scalars = (
    toml_text
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats()
    | st.booleans()
    | st.dates()
    | st.sampled_from(["127.0.0.1:0", "0.0.0.0:9464", "[::1]:80", "fixed", "adaptive", "sqlite", "redis", "debug"])
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(SETTING_KEYS) | toml_text, inner, max_size=3)
    ),
    max_leaves=8,
)
agent_tables = st.dictionaries(
    st.sampled_from(["echo", "sleep", "x"]) | toml_text,
    st.dictionaries(st.sampled_from(["max_attempts", "timeout", "permanent", "rate", "nope"]), toml_values, max_size=3),
    max_size=2,
)
config_documents = st.dictionaries(st.sampled_from(SETTING_KEYS) | toml_text, toml_values, max_size=5) | st.builds(
    lambda doc, agents: {**doc, "agent": agents},
    st.dictionaries(st.sampled_from(SETTING_KEYS), toml_values, max_size=3),
    agent_tables,
)
env_values = st.dictionaries(
    st.sampled_from([f"SWARMD_{key.upper()}" for key in SETTING_KEYS] + ["SWARMD_NOPE", "SWARMD_AGENT"]),
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
    | st.sampled_from(["64", "0", "-1", "none", "1e9", "nan", "inf", "true", "127.0.0.1:1", "0.0.0.0:1", "x,y"]),
    max_size=3,
)


def _toml_key(key: str) -> str:
    return _toml_string(key)


def _toml_string(text: str) -> str:
    out = ['"']
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"


def to_toml(document: dict[str, Any]) -> str:
    return "".join(f"{_toml_key(key)} = {_toml_value(value)}\n" for key, value in document.items())


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@FAST
@given(config_documents, env_values)
def test_load_settings_raises_only_config_error_naming_the_key(
    scratch: Path, document: dict[str, Any], environ: dict[str, str]
) -> None:
    text = to_toml(document)
    assert tomllib.loads(text).keys() == document.keys()  # the writer itself is sound
    path = scratch / "swarmd.toml"
    path.write_text(text, encoding="utf-8")
    try:
        loaded = load_settings(config_path=path, environ=environ)
    except ConfigError as exc:
        assert exc.key and exc.reason and f"config error: {exc.key}: " in str(exc)
        # The key as written (a blank one is shown as ""), or an environment variable, or one
        # of the keys of a cross-field rule; a dotted or indexed key starts with one of those.
        env_keys = {name.removeprefix("SWARMD_").lower() for name in environ}
        names = {key or '""' for key in document} | set(environ) | env_keys
        names |= {"min_concurrent", "backoff_cap", "metrics_listen"}
        assert any(exc.key == name or exc.key.startswith((f"{name}.", f"{name}[")) for name in names), (
            f"{exc} names {exc.key!r}, not one of {sorted(names)}"
        )
        return
    assert isinstance(loaded, Settings)


# -- traceparent ----------------------------------------------------------------------------
hex_digits = st.text(alphabet="0123456789abcdef", min_size=1, max_size=40)


@FAST
@given(
    st.text(max_size=80)
    | st.builds(lambda a, b, c, d: f"{a}-{b}-{c}-{d}", hex_digits, hex_digits, hex_digits, hex_digits)
)
def test_parse_traceparent_never_raises(value: str) -> None:
    parsed = parse_traceparent(value)
    if parsed is not None:
        trace_id, span_id, flags = parsed
        assert value == f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"
        assert trace_id and span_id


@FAST
@given(st.integers(1, 2**128 - 1), st.integers(1, 2**64 - 1), st.integers(0, 255))
def test_parse_traceparent_reads_every_valid_value(trace_id: int, span_id: int, flags: int) -> None:
    assert parse_traceparent(f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}") == (trace_id, span_id, flags)


# -- the CLI --------------------------------------------------------------------------------
# Options that would point the CLI at something other than the test's own state directory
# (another directory, a config file, a Redis someone else runs): never generated.
FORBIDDEN = ("--state-dir", "--config", "--backend", "--redis-url", "--redis-prefix")
COMMANDS: dict[tuple[str, ...], list[str]] = {
    ("submit",): [
        "--agent", "--gid", "--payload", "--payload-file", "--count", "--swarm", "--fail-fast", "--priority",
        "--delay", "--timeout", "--max-attempts", "--idempotency-key", "--json",
    ],
    ("status",): ["--swarm", "--json"],
    ("jobs",): ["--state", "--limit", "--json"],
    ("cancel",): ["--swarm", "--json"],
    ("ledger", "tail"): ["-n", "--json"],
    ("ledger", "export"): [],
    ("ledger", "verify"): [],
    ("dlq", "list"): ["--limit", "--json"],
    ("dlq", "requeue"): ["--all", "--json"],
    ("dlq", "purge"): ["--older-than"],
}  # fmt: skip
argument_values = (
    any_text
    | st.integers().map(str)
    | st.floats().map(repr)
    | st.sampled_from(["echo", "sleep", "GID-1", "{}", '{"seconds": 0}', "[", "-", "7d", "1e999", "nan", "-5"])
    | st.text(alphabet=string.hexdigits, min_size=32, max_size=32)
)


def _allowed(token: str, options: list[str]) -> bool:
    name = token.split("=", 1)[0]
    if not name.startswith("--") or name in options:
        return True
    return not any(forbidden.startswith(name) for forbidden in FORBIDDEN)


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    command = draw(st.sampled_from(sorted(COMMANDS)))
    options = COMMANDS[command]
    tokens = draw(st.lists(st.sampled_from(options) | argument_values, max_size=8) if options else st.just([]))
    if command == ("submit",) and draw(st.booleans()):
        tokens = [
            "--agent",
            draw(st.sampled_from(["echo", "sleep"]) | any_text),
            "--gid",
            draw(argument_values),
            *tokens,
        ]
    return [*command, *(token for token in tokens if _allowed(token, options))]


@contextlib.contextmanager
def captured(stdin: bytes = b"") -> Iterator[tuple[io.StringIO, io.StringIO]]:
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield out, err
    finally:
        sys.stdin = saved


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(command_lines())
@example(["status", "\udcff"])
@example(["jobs", "--limit", str(2**70)])
@example(["ledger", "tail", "-n", str(-(2**70))])
@example(["dlq", "list", "--limit", "99999999999999999999"])
@example(["submit", "--agent", "echo", "--gid", "G\udcff"])
@example(["submit", "--agent", "echo", "--gid", "G", "--timeout", "nan"])
@example(["submit", "--agent", "echo", "--gid", "G", "--count", "100000000000"])
@example(["submit", "--agent", "echo", "--gid", "G", "--idempotency-key", "\udc80"])
@example(["cancel", "--swarm", "\ud800"])
@example(["dlq", "purge", "--older-than", "9" * 400])
@example(["dlq", "requeue", "\udcff"])
def test_cli_arguments_end_in_an_exit_code_and_a_message_never_a_traceback(scratch: Path, argv: list[str]) -> None:
    state = scratch / "cli-state"
    with captured(b'{"seconds": 0}') as (_, err):
        try:
            code = cli.main([*argv, "--state-dir", str(state)])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    assert code in (0, 1, 2), f"exit {code}"
    message = err.getvalue()
    if code == 0:
        return
    if message.startswith("usage:"):  # argparse: exit 2, usage, then "swarmd CMD: error: argument NAME: ..."
        assert code == 2 and re.search(r"^swarmd( [a-z]+)*: error: ", message, re.MULTILINE), message
    elif argv[:2] == ["ledger", "verify"] and code == 1:
        return  # a broken ledger is reported on stdout
    else:
        assert message.startswith("swarmd: error: ") and message.endswith("\n"), message
    assert NAMES.search(message), f"the message names no argument, field or object: {message}"


#: What an error message must name: an argument, a job field, the object not found, or the
#: arguments that are missing or not understood.
NAMES = re.compile(r"argument|--[a-z-]+|JOB_ID|invalid job: [a-z_$]+: |not found: \w|state directory")
