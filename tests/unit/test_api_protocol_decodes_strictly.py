"""The API socket's frames and requests: what decodes, and that anything else is an
`ApiProtocolError` naming the field (fuzzed with hypothesis), never another exception."""

from __future__ import annotations

import contextlib
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.strategies import msgpack_values as values

from swarmd.api.protocol import (
    HEADER,
    MAX_FRAME,
    OPERATIONS,
    VERSION,
    ErrorBody,
    Op,
    Request,
    decode_args,
    decode_request,
    encode,
    error_body,
    frame,
    frame_length,
    raise_error,
)
from swarmd.errors import ApiProtocolError, ApiRefused, JobNotFound, JobValidationError, UnknownAgentError


def test_a_request_round_trips() -> None:
    request = Request(VERSION, 7, Op.STATUS, msgspec.Raw(encode({"job_id": "abc"})))
    data = frame(request)
    assert frame_length(data[: HEADER.size]) == len(data) - HEADER.size
    decoded = decode_request(data[HEADER.size :])
    assert (decoded.v, decoded.id, decoded.op) == (VERSION, 7, Op.STATUS)
    assert decode_args(decoded.op, decoded.args).job_id == "abc"


def test_an_oversized_frame_is_refused_from_its_header() -> None:
    with pytest.raises(ApiProtocolError) as error:
        frame_length(HEADER.pack(MAX_FRAME + 1))
    assert error.value.field == "frame"


def test_another_version_is_refused_naming_it() -> None:
    with pytest.raises(ApiProtocolError, match="protocol version 2 is not 1") as error:
        decode_request(encode({"v": 2, "id": 1, "op": "ping"}))
    assert error.value.field == "v"


def test_a_bad_argument_is_refused_naming_its_field() -> None:
    with pytest.raises(ApiProtocolError) as error:
        decode_args(Op.LIST_JOBS, msgspec.Raw(encode({"limit": 0})))
    assert error.value.field == "args.limit"
    with pytest.raises(ApiProtocolError) as error:
        decode_args(Op.STATUS, msgspec.Raw(encode({"job_id": "x", "extra": 1})))
    assert "unknown field" in error.value.reason


@given(st.binary(max_size=200))
@settings(max_examples=500)
def test_any_bytes_decode_or_are_a_protocol_error(body: bytes) -> None:
    with contextlib.suppress(ApiProtocolError):
        decode_request(body)


@given(st.sampled_from(list(Op)), values)
@settings(max_examples=500)
def test_any_arguments_decode_or_are_a_protocol_error(op: Op, args: Any) -> None:
    with contextlib.suppress(ApiProtocolError):
        decode_args(op, msgspec.Raw(encode(args)))


@pytest.mark.parametrize(
    "exc",
    [
        JobValidationError("payload", "too big"),
        UnknownAgentError("nope", ["echo"]),
        ApiProtocolError("args.n", "out of range"),
        ApiRefused("gid_not_allowed", "webapp may not submit for GID 'X'"),
        JobNotFound("job abc"),
    ],
)
def test_an_error_crosses_the_socket_as_its_documented_class(exc: Exception) -> None:
    body = msgspec.msgpack.decode(encode(error_body(exc)), type=ErrorBody)
    with pytest.raises(type(exc) if not isinstance(exc, UnknownAgentError) else JobValidationError) as raised:
        raise_error(body)
    assert str(raised.value) == str(exc)


def test_every_operation_has_strict_arguments() -> None:
    for spec in OPERATIONS.values():
        assert spec.args.__struct_config__.forbid_unknown_fields
