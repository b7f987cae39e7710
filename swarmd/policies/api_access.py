"""Who may submit for which GIDs through the API socket: the ``[api.allow]`` table, decided.

The socket's file mode and group decide who may connect at all; this decides, per request,
for which agent identities (GIDs) a connected peer may submit or cancel. The table maps user
names, or ``@group`` names, to fnmatch patterns of GIDs (``"webapp" = ["GID-1*"]``). A peer
may act for a GID that any pattern of its user entry or of one of its groups' entries matches.
Root and the daemon's own user may act for any GID; with no table, every connected peer may.
Pure: the peer's names and groups are resolved by the caller.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from swarmd.model import ApiRefuseReason as RefuseReason

#: How a refusal names what was refused.
_PHRASES = {"submit": "submit for", "cancel": "cancel the jobs of"}


@dataclass(frozen=True, slots=True)
class Peer:
    """The process at the other end of a connection, from SO_PEERCRED, with its names."""

    uid: int
    gid: int
    pid: int
    user: str | None = None
    #: Names of the groups the peer's user is in (primary and supplementary).
    groups: frozenset[str] = frozenset()

    def label(self) -> str:
        """``uid:1000(alice)/gid:1000/pid:4242``: what a job's ``submitted_by`` records."""
        name = f"({self.user})" if self.user else ""
        return f"uid:{self.uid}{name}/gid:{self.gid}/pid:{self.pid}"


@dataclass(frozen=True, slots=True)
class Refusal:
    """A refused request: the reason code and a sentence for the producer."""

    reason: RefuseReason
    detail: str


class ApiAccess:
    """The allow table of one configuration, and the daemon's own uid."""

    def __init__(self, allow: Mapping[str, Iterable[str]], *, daemon_uid: int) -> None:
        self._users = {name: tuple(p) for name, p in allow.items() if not name.startswith("@")}
        self._groups = {name[1:]: tuple(p) for name, p in allow.items() if name.startswith("@")}
        self._daemon_uid = daemon_uid

    def patterns(self, peer: Peer) -> tuple[str, ...] | None:
        """The GID patterns ``peer`` may act for (None: any GID)."""
        if peer.uid in (0, self._daemon_uid) or not (self._users or self._groups):
            return None
        found: list[str] = []
        if peer.user is not None:
            found.extend(self._users.get(peer.user, ()))
        for group in sorted(peer.groups):
            found.extend(self._groups.get(group, ()))
        return tuple(found)

    def check(self, peer: Peer, gids: Iterable[str], action: str = "submit") -> Refusal | None:
        """None if ``peer`` may act for every GID in ``gids``, else why not (the first refused).
        ``action`` (``submit`` or ``cancel``) is named in the refusal."""
        patterns = self.patterns(peer)
        if patterns is None:
            return None
        who = peer.user or f"uid {peer.uid}"
        if not patterns:
            return Refusal(RefuseReason.NOT_LISTED, f"{who} is not in the [api.allow] table of this daemon")
        for gid in gids:
            if not any(fnmatch.fnmatchcase(gid, pattern) for pattern in patterns):
                return Refusal(
                    RefuseReason.GID_NOT_ALLOWED,
                    f"{who} may not {_PHRASES.get(action, action)} GID {gid!r} (allowed: {', '.join(patterns)})",
                )
        return None
