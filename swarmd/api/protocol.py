"""The wire protocol of the daemon's API socket, shared by the server and the client.

A frame is a 4-byte big-endian length followed by that many bytes of MessagePack (msgspec).
A client sends `Request` frames; the daemon answers each with a `Response` frame carrying the
same ``id`` (answers to pipelined requests may come in any order). Every request carries the
protocol version `VERSION`; a daemon refuses a version it does not speak.

Each operation (`Op`) has one strict argument struct and one result type (`OPERATIONS`), so
decoding a request validates it: a wrong type, an unknown field or an out-of-range number is an
`ApiProtocolError` naming the field, before anything runs. A frame longer than `MAX_FRAME`, or
one that does not decode as a `Request`, gets an error reply and the connection is closed.

Room to grow: an operation that streams (``wait``, ``as_completed`` of the results issue) is a
new `Op` whose handler sends several responses with the request's ``id``, the last one marked
``done``; clients that do not use it are unaffected.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Annotated, Any, Final, NoReturn

import msgspec

from swarmd.errors import (
    ApiError,
    ApiProtocolError,
    ApiRefused,
    BackendUnavailable,
    JobNotFound,
    JobValidationError,
    SwarmdError,
)
from swarmd.ledger.chain import StoredEntry
from swarmd.model import MAX_PAYLOAD_BYTES, AgentName, Gid, Job, JobId, JobState, SwarmPlan, plain_strings
from swarmd.queue.base import JobInfo, SwarmProgress

#: The protocol version this swarmd speaks.
VERSION: Final = 1
#: Largest frame body, in bytes, either way: a submit of jobs encoding to more is refused
#: (submit fewer at a time), which bounds what one connection makes the daemon hold.
MAX_FRAME: Final = 16 * MAX_PAYLOAD_BYTES
#: Most jobs in one submit_many, and most entries one listing returns.
MAX_BATCH: Final = 100_000
MAX_LIST: Final = 10_000
HEADER: Final = struct.Struct(">I")

#: Longest one ``wait_finished`` request may wait, in seconds (a client waits longer by asking again).
MAX_WAIT: Final = 60.0
Limit = Annotated[int, msgspec.Meta(ge=1, le=MAX_LIST)]
Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_LIST)]


class Op(enum.StrEnum):
    """The operations the socket serves."""

    SUBMIT_MANY = "submit_many"
    STATUS = "status"
    SWARM_STATUS = "swarm_status"
    CANCEL = "cancel"
    LIST_JOBS = "list_jobs"
    LEDGER_TAIL = "ledger_tail"
    COUNTS = "counts"
    COUNT_JOBS = "count_jobs"
    CANCEL_MATCHING = "cancel_matching"
    HOLDS = "holds"
    LEDGER_ENTRIES = "ledger_entries"
    WAIT_FINISHED = "wait_finished"
    PUBLISHED_AGENTS = "published_agents"
    SWARM_PROGRESS = "swarm_progress"
    PING = "ping"


class Request(msgspec.Struct, forbid_unknown_fields=True):
    """One request: protocol version, the client's id for it, the operation and its arguments."""

    v: int
    id: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
    op: Op
    args: msgspec.Raw = msgspec.Raw(b"\x80")  # an empty map


class ErrorBody(msgspec.Struct, forbid_unknown_fields=True):
    """Why a request failed: the `swarmd.errors` class name, its message and, where there is
    one, the field at fault (a job's field, ``frame``, ``args.limit``)."""

    type: str
    message: str
    field: str | None = None


class Response(msgspec.Struct, forbid_unknown_fields=True):
    """The answer to one request: ``ok`` with ``result`` (encoded per `Operation.result`), or
    not ok with ``error``. ``id`` is the request's (0 when the request could not be read)."""

    v: int
    id: int
    ok: bool
    result: msgspec.Raw = msgspec.Raw(b"\xc0")  # nil
    error: ErrorBody | None = None


# -- arguments, one strict struct per operation ----------------------------------------------
class SubmitArgs(msgspec.Struct, forbid_unknown_fields=True):
    """Jobs sealed by the client (`swarmd.model.seal`), checked again by the daemon."""

    jobs: Annotated[list[Job], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]
    #: Swarms among the jobs that have a follow-up (``then=``).
    plans: Annotated[list[SwarmPlan], msgspec.Meta(max_length=1)] = msgspec.field(default_factory=list)


class StatusArgs(msgspec.Struct, forbid_unknown_fields=True):
    job_id: JobId


class SwarmStatusArgs(msgspec.Struct, forbid_unknown_fields=True):
    swarm_id: JobId


class CancelArgs(msgspec.Struct, forbid_unknown_fields=True):
    job_id: JobId | None = None
    swarm_id: JobId | None = None


class ListJobsArgs(msgspec.Struct, forbid_unknown_fields=True):
    state: JobState | None = None
    limit: Limit = 100
    agent: AgentName | None = None
    gid: Gid | None = None
    swarm_id: JobId | None = None


class FilterArgs(msgspec.Struct, forbid_unknown_fields=True):
    """Which queued jobs a count or a bulk cancel means (`swarmd.queue.base.JobFilter`)."""

    state: JobState | None = None
    agent: AgentName | None = None
    gid: Gid | None = None
    swarm_id: JobId | None = None


class LedgerTailArgs(msgspec.Struct, forbid_unknown_fields=True):
    n: Count = 10


class JobIdsArgs(msgspec.Struct, forbid_unknown_fields=True):
    job_ids: Annotated[list[JobId], msgspec.Meta(min_length=1, max_length=MAX_LIST)]


class WaitFinishedArgs(msgspec.Struct, forbid_unknown_fields=True):
    """Wait at most ``timeout`` seconds for the commit of any of ``job_ids``; the answer names
    those committed (at once if some already are; empty on timeout)."""

    job_ids: Annotated[list[JobId], msgspec.Meta(min_length=1, max_length=MAX_LIST)]
    timeout: Annotated[float, msgspec.Meta(ge=0, le=MAX_WAIT)] = 1.0


class NoArgs(msgspec.Struct, forbid_unknown_fields=True):
    """For operations without arguments."""


class PingResult(msgspec.Struct):
    """Who the daemon is, and who it takes the caller for (its `submitted_by`)."""

    version: str
    peer: str


@dataclass(frozen=True, slots=True)
class Operation:
    """What one operation takes and returns on the wire."""

    args: type[msgspec.Struct]
    result: Any


#: Every operation's argument struct and result type.
OPERATIONS: Final[dict[Op, Operation]] = {
    Op.SUBMIT_MANY: Operation(SubmitArgs, list[str]),
    Op.STATUS: Operation(StatusArgs, JobInfo),
    Op.SWARM_STATUS: Operation(SwarmStatusArgs, list[JobInfo]),
    Op.CANCEL: Operation(CancelArgs, list[str]),
    Op.LIST_JOBS: Operation(ListJobsArgs, list[JobInfo]),
    Op.LEDGER_TAIL: Operation(LedgerTailArgs, list[StoredEntry]),
    Op.COUNTS: Operation(NoArgs, dict[str, int]),
    Op.COUNT_JOBS: Operation(FilterArgs, int),
    Op.CANCEL_MATCHING: Operation(FilterArgs, list[str]),
    Op.HOLDS: Operation(NoArgs, dict[str, str]),
    Op.LEDGER_ENTRIES: Operation(JobIdsArgs, list[StoredEntry]),
    Op.WAIT_FINISHED: Operation(WaitFinishedArgs, list[str]),
    Op.PUBLISHED_AGENTS: Operation(NoArgs, list[str] | None),
    Op.SWARM_PROGRESS: Operation(SwarmStatusArgs, SwarmProgress | None),
    Op.PING: Operation(NoArgs, PingResult),
}

_encoder: Final = msgspec.msgpack.Encoder(enc_hook=plain_strings)  # a JobHandle is sent as its id
_request_decoder: Final = msgspec.msgpack.Decoder(Request)
_response_decoder: Final = msgspec.msgpack.Decoder(Response)
_args_decoders: Final = {op: msgspec.msgpack.Decoder(spec.args) for op, spec in OPERATIONS.items()}
_result_decoders: Final = {op: msgspec.msgpack.Decoder(spec.result) for op, spec in OPERATIONS.items()}


def frame(message: msgspec.Struct) -> bytes:
    """A message as one frame (length prefix + MessagePack); ApiProtocolError if too large."""
    body = _encoder.encode(message)
    if len(body) > MAX_FRAME:
        raise ApiProtocolError("frame", f"{len(body)} bytes is over the limit of {MAX_FRAME} bytes")
    return HEADER.pack(len(body)) + body


def frame_length(header: bytes) -> int:
    """The body length a frame header announces; ApiProtocolError past `MAX_FRAME`."""
    (length,) = HEADER.unpack(header)
    if length > MAX_FRAME:
        raise ApiProtocolError("frame", f"{length} bytes is over the limit of {MAX_FRAME} bytes")
    return int(length)


def encode(value: Any) -> bytes:
    """A value as MessagePack (arguments and results, wrapped in `msgspec.Raw`)."""
    return _encoder.encode(value)


def _refusal(exc: msgspec.MsgspecError, prefix: str) -> ApiProtocolError:
    message = str(exc)
    field, _, where = message.rpartition(" - at `$")
    if field and where.endswith("`"):
        return ApiProtocolError(f"{prefix}{where[:-1].lstrip('.')}".rstrip("."), field)
    return ApiProtocolError(prefix.rstrip(".") or "frame", message)


def decode_request(body: bytes) -> Request:
    """A frame body as a `Request` of this version; ApiProtocolError naming what is wrong."""
    try:
        request = _request_decoder.decode(body)
    except (msgspec.MsgspecError, RecursionError) as exc:
        if isinstance(exc, RecursionError):
            raise ApiProtocolError("frame", "nested too deeply") from None
        raise _refusal(exc, "") from None
    if request.v != VERSION:
        raise ApiProtocolError("v", f"protocol version {request.v} is not {VERSION}, the one this daemon speaks")
    return request


def decode_args(op: Op, raw: msgspec.Raw) -> Any:
    """A request's arguments as its operation's struct; ApiProtocolError naming the field."""
    try:
        return _args_decoders[op].decode(raw)
    except msgspec.MsgspecError as exc:
        raise _refusal(exc, "args.") from None
    except RecursionError:
        raise ApiProtocolError("args", "nested too deeply") from None


def decode_response(body: bytes) -> Response:
    """A frame body as a `Response`; ApiProtocolError if the daemon's answer is unreadable."""
    try:
        return _response_decoder.decode(body)
    except msgspec.MsgspecError as exc:
        raise ApiProtocolError("frame", f"unreadable response: {exc}") from None


def decode_result(op: Op, raw: msgspec.Raw) -> Any:
    """A response's result as its operation's result type."""
    try:
        return _result_decoders[op].decode(raw)
    except msgspec.MsgspecError as exc:
        raise ApiProtocolError("result", f"unreadable result of {op}: {exc}") from None


# -- errors on the wire ----------------------------------------------------------------------
def error_body(exc: Exception) -> ErrorBody:
    """An error of the daemon's as the producer gets it (see `raise_error`)."""
    if isinstance(exc, JobValidationError | ApiProtocolError):
        return ErrorBody(type(exc).__name__, exc.reason, exc.field)
    if isinstance(exc, ApiRefused):
        return ErrorBody("ApiRefused", exc.detail, exc.reason)
    if isinstance(exc, JobNotFound):
        return ErrorBody("JobNotFound", exc.what)
    if isinstance(exc, SwarmdError):
        return ErrorBody(type(exc).__name__, str(exc))
    return ErrorBody("InternalError", f"the daemon failed to serve the request: {type(exc).__name__}")


def raise_error(error: ErrorBody) -> NoReturn:
    """Raise what a daemon's `ErrorBody` says, as the `swarmd.errors` class the daemon raised
    (or its nearest documented base: `ApiError` for one this client does not know)."""
    field = error.field or "$"
    if error.type in ("JobValidationError", "UnknownAgentError"):
        raise JobValidationError(field, error.message)
    if error.type == "ApiProtocolError":
        raise ApiProtocolError(field, error.message)
    if error.type == "ApiRefused":
        raise ApiRefused(error.field or "refused", error.message)
    if error.type == "JobNotFound":
        raise JobNotFound(error.message)
    if error.type == "BackendUnavailable":
        raise BackendUnavailable(error.message)
    raise ApiError(f"{error.type}: {error.message}")
