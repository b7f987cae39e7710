"""The ids of a swarm's trace, derived from the swarm id alone.

Every member of a swarm, run by whichever daemon, names the same parent without asking anyone:
the swarm span, whose trace id and span id are a hash of the swarm id. The daemon whose commit
records the swarm's last outcome emits that span afterwards (`Tracing.swarm_span`), with the
ids its members already point at. A follow-up job of the swarm joins the trace by carrying
:func:`swarm_traceparent` as its ``traceparent``.

When the producer traced the submit (its ``send`` span's context is on every member), the
members are one trace already: the swarm span keeps the derived span id but joins the
producer's trace, as a child of the ``send`` span.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Final

__all__ = ["swarm_span_ids", "swarm_traceparent"]

#: Swarms whose ids are kept computed (one per running swarm is plenty).
_CACHED: Final = 1024
#: Distinguishes these hashes from any other use of the swarm id.
_PERSON: Final = b"swarmd-swarm"


@lru_cache(maxsize=_CACHED)
def swarm_span_ids(swarm_id: str) -> tuple[int, int]:
    """``(trace_id, span_id)`` of the swarm span of ``swarm_id``: never zero, always the same."""
    digest = hashlib.blake2b(swarm_id.encode(), digest_size=24, person=_PERSON).digest()
    trace_id = int.from_bytes(digest[:16], "big") or 1
    span_id = int.from_bytes(digest[16:], "big") or 1
    return trace_id, span_id


def swarm_traceparent(swarm_id: str, *, sampled: bool = True) -> str:
    """The W3C ``traceparent`` naming the swarm span of ``swarm_id`` as parent.

    ``sampled`` sets the ``sampled`` flag; `Tracing.swarm_parent` sets it as the daemon's
    sampler decides for the swarm's trace.
    """
    trace_id, span_id = swarm_span_ids(swarm_id)
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"
