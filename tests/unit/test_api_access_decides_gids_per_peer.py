"""The ``[api.allow]`` table: which GIDs a peer of the API socket may submit and cancel for."""

from __future__ import annotations

from swarmd.model import ApiRefuseReason
from swarmd.policies.api_access import ApiAccess, Peer
from swarmd.telemetry.metrics import API_REFUSE_REASONS

ALLOW = {"webapp": ["GID-1*", "GID-2?"], "@analysts": ["GID-9*"]}
DAEMON_UID = 990


def _peer(uid: int, user: str | None, *groups: str) -> Peer:
    return Peer(uid=uid, gid=uid, pid=42, user=user, groups=frozenset(groups))


def test_without_a_table_every_connected_peer_may_act_for_any_gid() -> None:
    access = ApiAccess({}, daemon_uid=DAEMON_UID)
    assert access.check(_peer(1000, "anyone"), ["GID-x", "other"]) is None
    assert access.patterns(_peer(1000, "anyone")) is None


def test_root_and_the_daemons_own_user_may_act_for_any_gid() -> None:
    access = ApiAccess(ALLOW, daemon_uid=DAEMON_UID)
    assert access.check(_peer(0, "root"), ["GID-5"]) is None
    assert access.check(_peer(DAEMON_UID, None), ["GID-5"]) is None


def test_a_user_entry_allows_its_patterns_only() -> None:
    access = ApiAccess(ALLOW, daemon_uid=DAEMON_UID)
    webapp = _peer(1000, "webapp")
    assert access.check(webapp, ["GID-1", "GID-123", "GID-21"]) is None
    refusal = access.check(webapp, ["GID-100", "GID-3"])
    assert refusal is not None
    assert refusal.reason is ApiRefuseReason.GID_NOT_ALLOWED
    assert refusal.detail == "webapp may not submit for GID 'GID-3' (allowed: GID-1*, GID-2?)"
    assert access.check(webapp, ["GID-211"]) is not None  # ? is one character
    assert access.check(webapp, ["gid-1"]) is not None  # case matters


def test_a_group_entry_allows_its_members_and_adds_to_their_user_entry() -> None:
    access = ApiAccess(ALLOW, daemon_uid=DAEMON_UID)
    assert access.check(_peer(1001, "carol", "analysts"), ["GID-9a"]) is None
    assert access.check(_peer(1000, "webapp", "analysts"), ["GID-1", "GID-9"]) is None


def test_a_peer_in_no_entry_is_refused_as_not_listed() -> None:
    access = ApiAccess(ALLOW, daemon_uid=DAEMON_UID)
    refusal = access.check(_peer(1002, None, "users"), ["GID-1"])
    assert refusal is not None
    assert refusal.reason is ApiRefuseReason.NOT_LISTED
    assert refusal.detail == "uid 1002 is not in the [api.allow] table of this daemon"


def test_the_peer_label_names_uid_user_gid_and_pid() -> None:
    assert _peer(1000, "webapp").label() == "uid:1000(webapp)/gid:1000/pid:42"
    assert _peer(1002, None).label() == "uid:1002/gid:1002/pid:42"


def test_every_refusal_reason_is_a_metric_label() -> None:
    assert set(API_REFUSE_REASONS) == {reason.value for reason in ApiRefuseReason}


def test_a_refused_cancel_says_so() -> None:
    refusal = ApiAccess(ALLOW, daemon_uid=DAEMON_UID).check(_peer(1000, "webapp"), ["GID-3"], "cancel")
    assert refusal is not None
    assert refusal.detail == "webapp may not cancel the jobs of GID 'GID-3' (allowed: GID-1*, GID-2?)"
