"""Which swarms a commit ended: the swarms of the outcomes it recorded, to be checked by the
backend for members still unrecorded.

`FinishReport.swarms_ended` names the swarms whose last member's outcome a commit recorded;
the daemon emits each one's swarm span from there. Each backend fills it with a small helper
(``_swarms_ended`` in ``sqlite/backend.py`` and ``redis/backend.py``) over the swarm ids this
module reads from the commit's new ledger records.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

__all__ = ["swarms_of"]


class _SwarmOnly(msgspec.Struct):
    """The one field of a ledger record read here."""

    swarm_id: str | None = None


_decode = msgspec.json.Decoder(_SwarmOnly).decode
#: Bytes present in every record of a swarm member (records are compact JSON): the others are
#: skipped without decoding.
_MARK = b'"swarm_id":'


def swarms_of(records: Iterable[bytes]) -> list[str]:
    """The distinct swarm ids of ``records`` (canonical ledger records), in order of first appearance."""
    found: dict[str, None] = {}
    for record in records:
        if _MARK in record:
            swarm_id = _decode(record).swarm_id
            if swarm_id is not None:
                found[swarm_id] = None
    return list(found)
