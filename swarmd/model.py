"""The job: plain data, strictly decoded.

A job is a msgspec Struct encoded as JSON (never pickle). It is validated twice: when a
producer builds it (`new_job`), so a bad job is refused at submit with a message naming the
field, and when the daemon decodes it (`decode_job`), so a job that reaches the queue some
other way is dead-lettered with its reason instead of crashing anything.
"""

from __future__ import annotations

import enum
import hashlib
import math
import os
import re
import time
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

import msgspec

from swarmd.errors import JobValidationError

#: Largest encoded payload accepted, in bytes.
MAX_PAYLOAD_BYTES: Final = 1024 * 1024
#: Deepest nesting of lists and objects accepted in a payload.
MAX_PAYLOAD_DEPTH: Final = 32
#: Largest delay (or not_before ahead of now) a job may ask for: one year, in seconds.
MAX_DELAY_SECONDS: Final = 365 * 24 * 3600
#: Largest total of encoded jobs in one submit (one transaction), in bytes.
MAX_BATCH_BYTES: Final = 64 * 1024 * 1024
#: Priorities run from lowest to highest; higher runs first.
MIN_PRIORITY: Final = -100
MAX_PRIORITY: Final = 100

ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}\Z"
GID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,127}\Z"
AGENT_PATTERN: Final = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}\Z"

JobId = Annotated[str, msgspec.Meta(pattern=ID_PATTERN)]
Gid = Annotated[str, msgspec.Meta(pattern=GID_PATTERN)]
AgentName = Annotated[str, msgspec.Meta(pattern=AGENT_PATTERN)]
Priority = Annotated[int, msgspec.Meta(ge=MIN_PRIORITY, le=MAX_PRIORITY)]
Seconds = Annotated[float, msgspec.Meta(gt=0, le=7 * 24 * 3600)]
#: Idempotency keys: any printable text (no control characters), 1 to 256 characters.
KEY_PATTERN: Final = r"^[^\x00-\x1f\x7f]{1,256}\Z"
Key = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=KEY_PATTERN)]
Traceparent = Annotated[str, msgspec.Meta(max_length=128)]


class Outcome(enum.StrEnum):
    """How one attempt of a job ended, or how the job itself ended.

    The ledger records one *final* outcome per job: ``succeeded``, ``dead_lettered`` or
    ``cancelled``. ``failed`` and ``timed_out`` describe attempts; ``retried`` counts
    attempts that sent their job back to the queue.
    """

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRIED = "retried"
    TIMED_OUT = "timed_out"
    DEAD_LETTERED = "dead_lettered"
    CANCELLED = "cancelled"


#: The outcomes a ledger entry of the daemon can carry.
FINAL_OUTCOMES: Final = frozenset({Outcome.SUCCEEDED, Outcome.DEAD_LETTERED, Outcome.CANCELLED})


class JobState(enum.StrEnum):
    """Where a job is in the queue."""

    READY = "ready"
    DELAYED = "delayed"
    LEASED = "leased"
    DEAD = "dead"
    DONE = "done"
    #: A swarm's follow-up, not submitted yet: it waits for the swarm's last member to end.
    AWAITING = "awaiting"


class CircuitState(enum.StrEnum):
    """Where an agent's circuit breaker is (``swarmd.policies.breaker``): ``closed`` runs its
    jobs, ``open`` holds them back, ``half_open`` lets one trial through."""

    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"


class RejectReason(enum.StrEnum):
    """Why the daemon refused a job before running it (``swarmd_rejected_jobs_total``)."""

    #: The stored job cannot be decoded into a valid `Job`.
    MALFORMED = "malformed"
    #: No registered agent has the job's agent name.
    UNKNOWN_AGENT = "unknown_agent"
    #: The job's payload is over the size limit.
    OVERSIZED = "oversized"
    #: The job was running each time the daemon crashed, ``poison_after`` times (see
    #: swarmd.runtime.crashes): dead-lettered instead of run again.
    POISON = "poison"


class ApiRefuseReason(enum.StrEnum):
    """Why the API socket refused a request (``swarmd_api_refused_total``; swarmd.policies.api_access)."""

    #: The peer is in no entry of the ``[api.allow]`` table.
    NOT_LISTED = "not_listed"
    #: The peer is listed, but no pattern of its entries matches the job's GID.
    GID_NOT_ALLOWED = "gid_not_allowed"
    #: A frame or a request could not be read (malformed, oversized, unknown version).
    MALFORMED = "malformed"
    #: The daemon already serves its most connections.
    TOO_MANY_CONNECTIONS = "too_many_connections"


class UpkeepStep(enum.StrEnum):
    """One step of the state's housekeeping, each a short hold of the backend by itself: of the
    SQLite backend's one thread (which the hot path's commits queue behind), or of the Redis
    server while its script runs (``swarmd_state_upkeep_step_seconds{step}``)."""

    #: Archived ledger entries forgotten (one transaction / script of at most FORGET_STEP entries).
    FORGET = "forget"
    #: SQLite: one incremental-vacuum step giving freed pages back.
    VACUUM = "vacuum"
    #: SQLite: the WAL checkpointed (PASSIVE) and, when nothing was left to copy, truncated, on a
    #: connection and thread of its own (the hot path's commits go on meanwhile).
    WAL_CHECKPOINT = "wal_checkpoint"
    #: Finished jobs' idempotency keys (and swarms) forgotten after result_ttl, one chunk.
    EXPIRE = "expire"
    #: Dead letters purged.
    PURGE_DEAD = "purge_dead"
    #: Archived job ids past their horizon (archived_id_ttl) forgotten, one chunk (SQLite).
    EXPIRE_ARCHIVED_IDS = "expire_archived_ids"


class FollowWhen(enum.StrEnum):
    """When a swarm's follow-up runs once the swarm's last member has ended."""

    #: Whatever the members came to (the follow-up sees each outcome).
    ALWAYS = "always"
    #: Only if every member succeeded; else the follow-up is recorded as cancelled ("skipped").
    ALL_SUCCEEDED = "all_succeeded"


class Job(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One unit of work for one agent, speaking for one identity (GID)."""

    id: JobId
    gid: Gid
    agent: AgentName
    payload: Any = None
    priority: Priority = 0
    #: Attempts started so far (0 before the first run).
    attempt: Annotated[int, msgspec.Meta(ge=0)] = 0
    #: None: the agent's (or the daemon's) default.
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=1000)] | None = None
    #: Seconds the handler may run; None: the agent's default.
    timeout: Seconds | None = None
    #: Unix time before which the job must not start.
    not_before: float = 0.0
    swarm_id: JobId | None = None
    #: How many jobs the swarm has (lets the daemon tell when a swarm is complete).
    swarm_size: Annotated[int, msgspec.Meta(ge=1)] | None = None
    fail_fast: bool = False
    idempotency_key: Key | None = None
    traceparent: Traceparent | None = None
    enqueued_at: float = 0.0
    #: Who submitted it through the API socket (``uid:1000(alice)/gid:1000/pid:42``, from
    #: SO_PEERCRED, set by the daemon); None for a direct submit. Since state version 2.
    submitted_by: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    #: The job whose handler submitted this one (``ctx.submit``); None for a producer's job.
    #: Since state version 3, as are ``follows`` and ``follow_when``.
    parent_id: JobId | None = None
    #: The swarm this job is the follow-up of: it is submitted when the swarm's last member ends.
    follows: JobId | None = None
    #: When the follow-up runs (see `FollowWhen`); None: always.
    follow_when: Literal["always", "all_succeeded"] | None = None


class SwarmPlan(msgspec.Struct, frozen=True, kw_only=True):
    """A swarm whose end submits a follow-up: stored with its members, in the same commit."""

    swarm_id: JobId
    #: How many members the swarm has; the follow-up is submitted when this many have ended.
    size: Annotated[int, msgspec.Meta(ge=1)]
    #: The follow-up, sealed (its id derived from the swarm's: see `derived_id`).
    then: Job


def derived_id(base: str, tag: str) -> str:
    """A job id that is a function of ``base`` (a job or swarm id) and ``tag`` (a position):
    every attempt of a handler names the same children, and a swarm always the same follow-up.
    Keeps the time prefix of a swarmd-made ``base``, so a family sorts with its root."""
    prefix = base[:12] if len(base) >= 12 and all(c in "0123456789abcdef" for c in base[:12]) else "0" * 12
    return prefix + hashlib.blake2b(f"{base}/{tag}".encode(), digest_size=10).hexdigest()


_job_decoder: Final = msgspec.json.Decoder(Job)


def plain_strings(value: Any) -> Any:
    """msgspec's ``enc_hook`` for the ``str`` subclasses JSON data may hold (a `swarmd.JobHandle`
    that `submit` returned, put into a payload or a result): encoded as the string they are."""
    if isinstance(value, str):
        return str.__str__(value)
    raise TypeError(f"Encoding objects of type {type(value).__name__} is unsupported")


_encoder: Final = msgspec.json.Encoder(enc_hook=plain_strings)
_AT_PATH = re.compile(r" - at `\$\.?([^`]*)`$")
_UNKNOWN_FIELD = re.compile(r"Object contains unknown field `([^`]*)`")


def new_job_id() -> str:
    """A unique, roughly time-ordered job id: 12 hex digits of milliseconds + 20 random."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


#: What `new_job_id` makes: 12 hex digits of milliseconds, then 20 of randomness.
_MADE_ID: Final = re.compile(r"[0-9a-f]{32}")


def job_id_order(job_id: str) -> int:
    """Where a job id made by `new_job_id` or `new_job_ids` sorts among them, as an integer
    that an SQLite record stores in six bytes (below 2**47 until 2248): its first 13 hex digits,
    the millisecond it was made and 4 bits by which `new_job_ids` sorts a batch made in one
    millisecond; 0 for any other id (one a submitter chose). Only an ordering hint, never
    proof: anyone may submit an id that looks made."""
    return int(job_id[:13], 16) if _MADE_ID.fullmatch(job_id) else 0


def new_job_ids(n: int) -> list[str]:
    """``n`` job ids from one read of the random source (for batches), in increasing order:
    sorting a batch's ids gives back the order its jobs were submitted in."""
    prefix = f"{time.time_ns() // 1_000_000:012x}"
    randomness = os.urandom(10 * n).hex()
    return sorted(prefix + randomness[20 * i : 20 * i + 20] for i in range(n))


def _field_of(message: str) -> tuple[str, str]:
    """Split a msgspec validation message into (field, reason)."""
    match = _AT_PATH.search(message)
    if match:
        field = match.group(1) or "$"
        return field.split(".")[0].split("[")[0], message[: match.start()]
    unknown = _UNKNOWN_FIELD.search(message)
    if unknown:
        return unknown.group(1), "unknown field"
    return "$", message


def check_payload(value: Any, *, max_depth: int = MAX_PAYLOAD_DEPTH) -> None:
    """Refuse anything that is not plain JSON data, nested no deeper than ``max_depth``.

    Objects need string keys; floats must be finite. Raises JobValidationError("payload").
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if item is None or isinstance(item, bool | int | str):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                raise JobValidationError("payload", f"{item!r} is not a JSON number")
            continue
        if isinstance(item, list | tuple | dict):
            if depth > max_depth:
                raise JobValidationError("payload", f"nested deeper than {max_depth} levels")
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        raise JobValidationError("payload", f"object key {key!r} is not a string")
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)
            continue
        raise JobValidationError("payload", f"{type(item).__name__} is not JSON data")


def decode_payload(text: str | bytes, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> Any:
    """Decode a JSON payload given as text (``--payload``), with the size and depth limits."""
    if isinstance(text, str):
        try:
            raw = text.encode()
        except UnicodeEncodeError as exc:  # argv that was not UTF-8 arrives surrogate-escaped
            raise JobValidationError("payload", f"not valid UTF-8 (at character {exc.start})") from None
    else:
        raw = text
    if len(raw) > max_bytes:
        raise JobValidationError("payload", f"over the limit of {max_bytes} bytes")
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise JobValidationError("payload", f"malformed JSON: {exc}") from None
    except RecursionError:
        raise JobValidationError("payload", f"nested deeper than {MAX_PAYLOAD_DEPTH} levels") from None
    check_payload(value)
    return value


def draft_job(
    *,
    agent: str,
    gid: str,
    payload: Any = None,
    priority: int = 0,
    max_attempts: int | None = None,
    timeout: float | None = None,
    delay: float = 0.0,
    not_before: float | None = None,
    swarm_id: str | None = None,
    swarm_size: int | None = None,
    fail_fast: bool = False,
    idempotency_key: str | None = None,
    traceparent: str | None = None,
    job_id: str | None = None,
    now: float | None = None,
    parent_id: str | None = None,
    follows: str | None = None,
    follow_when: str | None = None,
) -> Job:
    """A job whose payload is checked but whose fields are not validated yet: `seal` them."""
    now = time.time() if now is None else now
    if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay <= MAX_DELAY_SECONDS:
        raise JobValidationError("delay", f"{_short(delay)} is not a number of seconds from 0 to {MAX_DELAY_SECONDS}")
    for name, text in (
        ("id", job_id),
        ("gid", gid),
        ("agent", agent),
        ("swarm_id", swarm_id),
        ("idempotency_key", idempotency_key),
        ("traceparent", traceparent),
    ):
        # Checked here, not by `seal`: JSON would quietly turn bytes, UUIDs or dates into text.
        if text is not None and not isinstance(text, str):
            raise JobValidationError(name, f"expected a string, got {type(text).__name__}")
    for name, number in (("timeout", timeout), ("not_before", not_before)):
        # JSON has no NaN or infinity: stored, they would silently become null.
        if isinstance(number, float) and not math.isfinite(number):
            raise JobValidationError(name, f"{number!r} is not a finite number")
    if (
        isinstance(not_before, int | float)
        and not isinstance(not_before, bool)
        and not_before > now + MAX_DELAY_SECONDS
    ):
        raise JobValidationError("not_before", f"{_short(not_before)} is more than {MAX_DELAY_SECONDS} s from now")
    check_payload(payload)
    return Job(
        id=job_id or new_job_id(),
        gid=gid,
        agent=agent,
        payload=payload,
        priority=priority,
        max_attempts=max_attempts,
        timeout=timeout,
        not_before=not_before if not_before is not None else (now + delay if delay else 0.0),
        swarm_id=swarm_id,
        swarm_size=swarm_size,
        fail_fast=fail_fast,
        idempotency_key=idempotency_key,
        traceparent=traceparent,
        enqueued_at=now,
        parent_id=parent_id,
        follows=follows,
        follow_when=follow_when,  # type: ignore[arg-type]  # `seal` checks it
    )


#: The keys a job spec (a mapping given to ``submit_many``, ``ctx.submit_many``) may have.
JOB_SPEC_KEYS: Final = frozenset(
    {
        "agent",
        "gid",
        "payload",
        "priority",
        "max_attempts",
        "timeout",
        "delay",
        "not_before",
        "idempotency_key",
        "job_id",
    }
)


def draft_spec(
    spec: Mapping[str, Any],
    *,
    job_id: str,
    allowed: frozenset[str] = JOB_SPEC_KEYS,
    **fields: Any,
) -> Job:
    """A job from a spec mapping (``agent``, ``gid``, ``payload``, ...: see `JOB_SPEC_KEYS`; those
    outside ``allowed`` are refused), with ``fields`` (swarm, trace, family) set by the caller;
    checked by `seal` afterwards, all at once."""
    if not isinstance(spec, Mapping):
        raise JobValidationError("$", f"a job spec is a mapping, not {type(spec).__name__}")
    if not spec.keys() <= allowed:
        raise JobValidationError(sorted(set(spec) - allowed, key=str)[0], "unknown field")
    get = spec.get
    agent, gid = get("agent"), get("gid")
    if agent is None or gid is None:
        raise JobValidationError("agent" if agent is None else "gid", "required")
    return draft_job(
        agent=agent,
        gid=gid,
        payload=get("payload"),
        priority=get("priority", 0),
        max_attempts=get("max_attempts"),
        timeout=get("timeout"),
        delay=get("delay", 0.0),
        not_before=get("not_before"),
        idempotency_key=get("idempotency_key"),
        job_id=get("job_id") or job_id,
        **fields,
    )


_batch_decoder: Final = msgspec.json.Decoder(list[Job])
_AT_ITEM = re.compile(r" - at `\$\[(\d+)\]\.?([^`]*)`$")


def _short(value: object) -> str:
    """A value for an error message, cut short (an int of 400 digits is not worth printing)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def seal(
    jobs: list[Job], *, max_payload_bytes: int = MAX_PAYLOAD_BYTES, max_batch_bytes: int = MAX_BATCH_BYTES
) -> list[Job]:
    """Validate drafted jobs, all in one strict decode; raises JobValidationError naming the
    field (and, in a batch, which job). A batch whose jobs encode to more than
    ``max_batch_bytes`` in all is refused before the rest is encoded: one submit is one
    transaction, and must fit in memory."""
    bodies: list[bytes] = []
    total = 0
    for position, job in enumerate(jobs):
        body = _encode_draft(job, position, len(jobs))
        total += len(body)
        if total > max_batch_bytes:
            raise JobValidationError(
                "$",
                f"a submit of {len(jobs)} jobs is over the limit of {max_batch_bytes} bytes in all "
                f"(reached at job {position}); submit fewer or smaller jobs at a time",
            )
        bodies.append(body)
    try:
        sealed = _batch_decoder.decode(b"[" + b",".join(bodies) + b"]")
    except msgspec.ValidationError as exc:
        message = str(exc)
        match = _AT_ITEM.search(message)
        if match is None:
            raise JobValidationError("$", message) from None
        position, path = int(match.group(1)), match.group(2) or "$"
        field = path.split(".")[0].split("[")[0]
        where = f" (job {position} of {len(jobs)})" if len(jobs) > 1 else ""
        raise JobValidationError(field, message[: match.start()] + where) from None
    for job, body in zip(sealed, bodies, strict=True):
        if len(body) > max_payload_bytes:  # the payload is smaller than its job: measure it exactly
            size = len(_encoder.encode(job.payload))
            if size > max_payload_bytes:
                raise JobValidationError("payload", f"{size} bytes is over the limit of {max_payload_bytes}")
    return sealed


def _encode_draft(job: Job, position: int, total: int) -> bytes:
    """A drafted job as JSON; a field no JSON can hold (an object, text with lone surrogates)
    is a JobValidationError naming it, not a TypeError from the encoder."""
    try:
        return _encoder.encode(job)
    except (TypeError, ValueError, msgspec.EncodeError):
        pass
    where = f" (job {position} of {total})" if total > 1 else ""
    for field in job.__struct_fields__:
        value = getattr(job, field)
        try:
            _encoder.encode(value)
        except (TypeError, ValueError, msgspec.EncodeError) as exc:
            raise JobValidationError(
                field, f"{type(value).__name__} value cannot be stored as JSON: {exc}{where}"
            ) from None
    raise JobValidationError("$", f"cannot be stored as JSON{where}")


def new_job(*, max_payload_bytes: int = MAX_PAYLOAD_BYTES, **fields: Any) -> Job:
    """Build and validate one job (see `draft_job` for the fields); raises JobValidationError."""
    return seal([draft_job(**fields)], max_payload_bytes=max_payload_bytes)[0]


def validate_job(fields: Mapping[str, Any]) -> Job:
    """Convert a mapping to a Job with every constraint checked."""
    try:
        return msgspec.convert(fields, Job, strict=True)
    except msgspec.ValidationError as exc:
        field, reason = _field_of(str(exc))
        raise JobValidationError(field, reason) from None


def encode_job(job: Job) -> bytes:
    """The job's canonical stored form (JSON)."""
    return _encoder.encode(job)


def decode_reserved(raw: bytes | str, attempt: int) -> Job:
    """`decode_job`, with the attempt number the reservation gave it. The decoded job is new
    and nobody else's yet, so the attempt is set in place rather than by copying the job."""
    job = decode_job(raw)
    msgspec.structs.force_setattr(job, "attempt", attempt)
    return job


def decode_job(raw: bytes | str) -> Job:
    """Decode a stored job strictly; raises JobValidationError naming the field.

    The payload limits of `new_job` hold here too (size, depth, plain JSON data): a job that
    reached the queue without passing a client is refused, not run.
    """
    try:
        job = _job_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        field, reason = _field_of(str(exc))
        raise JobValidationError(field, reason) from None
    except msgspec.DecodeError as exc:
        raise JobValidationError("$", f"malformed JSON: {exc}") from None
    except UnicodeEncodeError:  # text holding lone surrogates: it cannot be UTF-8 JSON
        raise JobValidationError("$", "not valid UTF-8 text") from None
    except RecursionError:
        raise JobValidationError("payload", f"nested deeper than {MAX_PAYLOAD_DEPTH} levels") from None
    if isinstance(job.payload, list | dict):
        check_payload(job.payload)
    if len(raw) > MAX_PAYLOAD_BYTES:  # the job is larger than its payload: measure it exactly
        size = len(_encoder.encode(job.payload))
        if size > MAX_PAYLOAD_BYTES:
            raise JobValidationError("payload", f"{size} bytes is over the limit of {MAX_PAYLOAD_BYTES}")
    return job
