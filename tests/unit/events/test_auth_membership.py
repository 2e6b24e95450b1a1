"""Authorisation rules for m.room.member events, as tables of cases.

Cast: CREATOR (hs.test, 100 / infinite in v12), MOD (hs.test, 50, joined),
ALICE (hs.test, 0), BOB and CAROL (other.test, 0).  Defaults: invite 0,
kick/ban/redact 50.
"""

from __future__ import annotations

import pytest

from trioserver.events import RoomVersion

from tests.unit.events.authcases import Case, expand, run, since
from tests.unit.events.helpers import ALICE, BOB, CREATOR, MOD

M = "m.room.member"
JOIN = {"membership": "join"}


def join(user: str, **extra: object) -> tuple[str, str, str, dict[str, object]]:
    return (M, user, user, {**JOIN, **extra})


def member(sender: str, target: str, membership: str) -> tuple[str, str, str, dict[str, str]]:
    return (M, sender, target, {"membership": membership})


VIA_CREATOR = {"join_authorised_via_users_server": CREATOR}

JOIN_CASES = [
    Case("public-join", join(BOB), True, join_rule="public"),
    Case(
        "join-for-someone-else", (M, ALICE, BOB, JOIN), False, reason="behalf", join_rule="public"
    ),
    Case(
        "banned-cannot-join-public",
        join(BOB),
        False,
        reason="banned",
        join_rule="public",
        members={BOB: "ban"},
    ),
    Case("invite-room-uninvited", join(BOB), False, reason="not invited"),
    Case("invite-room-invited", join(BOB), True, members={BOB: "invite"}),
    Case("invite-room-rejoin", join(BOB), True, members={BOB: "join"}),
    Case("invite-room-after-leave", join(BOB), False, members={BOB: "leave"}),
    Case("no-join-rules-means-invite", join(BOB), False, join_rule=None),
    Case("no-join-rules-invited", join(BOB), True, join_rule=None, members={BOB: "invite"}),
    Case(
        "knock-room-invited", join(BOB), True, since(7), join_rule="knock", members={BOB: "invite"}
    ),
    Case(
        "knock-rule-unknown-before-v7",
        join(BOB),
        False,
        since(1, 6),
        join_rule="knock",
        members={BOB: "invite"},
    ),
    Case("knock-room-uninvited", join(BOB), False, join_rule="knock"),
    Case(
        "knock-room-knocked", join(BOB), False, since(7), join_rule="knock", members={BOB: "knock"}
    ),
    Case("private-room", join(BOB), False, join_rule="private", members={BOB: "invite"}),
    Case("unknown-join-rule", join(BOB), False, join_rule="xyz", members={BOB: "invite"}),
    Case(
        "restricted-authorised",
        join(BOB, **VIA_CREATOR),
        True,
        since(8),
        join_rule="restricted",
        cosign="hs.test",
    ),
    Case(
        "restricted-unknown-before-v8",
        join(BOB, **VIA_CREATOR),
        False,
        since(1, 7),
        join_rule="restricted",
        cosign="hs.test",
    ),
    Case(
        "restricted-no-authoriser",
        join(BOB),
        False,
        since(8),
        reason="without join_auth",
        join_rule="restricted",
    ),
    Case(
        "restricted-authoriser-not-signed",
        join(BOB, **VIA_CREATOR),
        False,
        since(8),
        reason="signed",
        join_rule="restricted",
    ),
    Case(
        "restricted-authoriser-not-joined",
        join(BOB, join_authorised_via_users_server=ALICE),
        False,
        since(8),
        reason="not joined",
        join_rule="restricted",
        members={ALICE: "invite"},
        cosign="hs.test",
    ),
    Case(
        "restricted-authoriser-cannot-invite",
        join(BOB, join_authorised_via_users_server=ALICE),
        False,
        since(8),
        reason="cannot invite",
        join_rule="restricted",
        power_levels={"invite": 50},
        members={ALICE: "join"},
        cosign="hs.test",
    ),
    Case(
        "restricted-authoriser-not-a-user",
        join(BOB, join_authorised_via_users_server=5),
        False,
        since(8),
        reason="not a user ID",
        join_rule="restricted",
    ),
    Case(
        "restricted-invited-needs-no-authoriser",
        join(BOB),
        True,
        since(8),
        join_rule="restricted",
        members={BOB: "invite"},
    ),
    Case(
        "restricted-banned",
        join(BOB, **VIA_CREATOR),
        False,
        since(8),
        reason="banned",
        join_rule="restricted",
        members={BOB: "ban"},
        cosign="hs.test",
    ),
    Case(
        "knock-restricted-authorised",
        join(BOB, **VIA_CREATOR),
        True,
        since(10),
        join_rule="knock_restricted",
        cosign="hs.test",
    ),
    Case(
        "knock-restricted-unknown-before-v10",
        join(BOB, **VIA_CREATOR),
        False,
        since(1, 9),
        join_rule="knock_restricted",
        cosign="hs.test",
    ),
    Case(
        "knock-restricted-invited",
        join(BOB),
        True,
        since(10),
        join_rule="knock_restricted",
        members={BOB: "invite"},
    ),
]

INVITE_CASES = [
    Case("invite", member(MOD, BOB, "invite"), True),
    Case("re-invite", member(MOD, BOB, "invite"), True, members={BOB: "invite"}),
    Case(
        "invite-knocking-user",
        member(MOD, BOB, "invite"),
        True,
        since(7),
        members={BOB: "knock"},
        join_rule="knock",
    ),
    Case("invite-after-leave", member(MOD, BOB, "invite"), True, members={BOB: "leave"}),
    Case(
        "inviter-not-joined",
        member(ALICE, BOB, "invite"),
        False,
        reason="not joined",
        members={ALICE: "invite"},
    ),
    Case(
        "invitee-joined",
        member(MOD, BOB, "invite"),
        False,
        reason="already joined",
        members={BOB: "join"},
    ),
    Case(
        "invitee-banned", member(MOD, BOB, "invite"), False, reason="banned", members={BOB: "ban"}
    ),
    Case("invite-at-default-level-0", member(ALICE, BOB, "invite"), True, members={ALICE: "join"}),
    Case(
        "below-invite-level",
        member(ALICE, BOB, "invite"),
        False,
        reason="invite level",
        power_levels={"invite": 50},
        members={ALICE: "join"},
    ),
    Case("at-invite-level", member(MOD, BOB, "invite"), True, power_levels={"invite": 50}),
]

LEAVE_CASES = [
    Case("leave-when-joined", member(BOB, BOB, "leave"), True, members={BOB: "join"}),
    Case("reject-invite", member(BOB, BOB, "leave"), True, members={BOB: "invite"}),
    Case(
        "retract-knock",
        member(BOB, BOB, "leave"),
        True,
        since(7),
        join_rule="knock",
        members={BOB: "knock"},
    ),
    Case("banned-cannot-leave", member(BOB, BOB, "leave"), False, members={BOB: "ban"}),
    Case("never-member-cannot-leave", member(BOB, BOB, "leave"), False),
    Case("cannot-leave-twice", member(BOB, BOB, "leave"), False, members={BOB: "leave"}),
    Case("kick", member(MOD, ALICE, "leave"), True, members={ALICE: "join"}),
    Case("revoke-invite", member(MOD, BOB, "leave"), True, members={BOB: "invite"}),
    Case(
        "kick-needs-kick-level",
        member(ALICE, BOB, "leave"),
        False,
        reason="kick",
        members={ALICE: "join", BOB: "join"},
    ),
    Case(
        "kick-higher-user",
        member(ALICE, MOD, "leave"),
        False,
        reason="kick",
        power_levels={"kick": 0},
        members={ALICE: "join"},
    ),
    Case(
        "kick-equal-user",
        member(MOD, ALICE, "leave"),
        False,
        reason="kick",
        power_levels={"users": {ALICE: 50}},
        members={ALICE: "join"},
    ),
    Case(
        "kick-level-above-sender",
        member(MOD, ALICE, "leave"),
        False,
        reason="kick",
        power_levels={"kick": 60},
        members={ALICE: "join"},
    ),
    Case(
        "kicker-not-joined",
        member(MOD, ALICE, "leave"),
        False,
        reason="not joined",
        members={MOD: "leave", ALICE: "join"},
    ),
    Case("kick-creator", member(MOD, CREATOR, "leave"), False, reason="kick"),
    Case("unban", member(MOD, BOB, "leave"), True, members={BOB: "ban"}),
    Case(
        "unban-needs-ban-level",
        member(MOD, BOB, "leave"),
        False,
        reason="ban level",
        power_levels={"ban": 60},
        members={BOB: "ban"},
    ),
    Case(
        "unban-needs-kick-level-too",
        member(MOD, BOB, "leave"),
        False,
        reason="kick",
        power_levels={"kick": 60},
        members={BOB: "ban"},
    ),
]

BAN_CASES = [
    Case("ban", member(MOD, ALICE, "ban"), True, members={ALICE: "join"}),
    Case("ban-outsider", member(MOD, BOB, "ban"), True),
    Case(
        "ban-needs-ban-level",
        member(ALICE, BOB, "ban"),
        False,
        reason="ban",
        members={ALICE: "join"},
    ),
    Case(
        "ban-equal-user",
        member(MOD, ALICE, "ban"),
        False,
        reason="ban",
        power_levels={"users": {ALICE: 50}},
    ),
    Case("ban-higher-user", member(MOD, CREATOR, "ban"), False, reason="ban"),
    Case(
        "ban-level-above-sender",
        member(MOD, ALICE, "ban"),
        False,
        reason="ban",
        power_levels={"ban": 51},
    ),
    Case(
        "banner-not-joined",
        member(MOD, ALICE, "ban"),
        False,
        reason="not joined",
        members={MOD: "invite"},
    ),
    Case("creator-bans-mod", member(CREATOR, MOD, "ban"), True),
    Case("self-ban-not-possible", member(MOD, MOD, "ban"), False, reason="ban"),
]

KNOCK_CASES = [
    Case("knock", member(BOB, BOB, "knock"), True, since(7), join_rule="knock"),
    Case(
        "knock-unknown-before-v7",
        member(BOB, BOB, "knock"),
        False,
        since(1, 6),
        reason="unknown membership",
        join_rule="knock",
    ),
    Case("knock-on-invite-room", member(BOB, BOB, "knock"), False, since(7), reason="join rule"),
    Case(
        "knock-on-public-room",
        member(BOB, BOB, "knock"),
        False,
        since(7),
        reason="join rule",
        join_rule="public",
    ),
    Case(
        "knock-for-someone-else",
        member(ALICE, BOB, "knock"),
        False,
        since(7),
        reason="behalf",
        join_rule="knock",
    ),
    Case(
        "knock-when-banned",
        member(BOB, BOB, "knock"),
        False,
        since(7),
        join_rule="knock",
        members={BOB: "ban"},
    ),
    Case(
        "knock-when-invited",
        member(BOB, BOB, "knock"),
        False,
        since(7),
        join_rule="knock",
        members={BOB: "invite"},
    ),
    Case(
        "knock-when-joined",
        member(BOB, BOB, "knock"),
        False,
        since(7),
        join_rule="knock",
        members={BOB: "join"},
    ),
    Case(
        "knock-after-leave",
        member(BOB, BOB, "knock"),
        True,
        since(7),
        join_rule="knock",
        members={BOB: "leave"},
    ),
    Case(
        "knock-restricted",
        member(BOB, BOB, "knock"),
        True,
        since(10),
        join_rule="knock_restricted",
    ),
    Case(
        "knock-restricted-unknown-v7-9",
        member(BOB, BOB, "knock"),
        False,
        since(7, 9),
        join_rule="knock_restricted",
    ),
]

OTHER_CASES = [
    Case("unknown-membership", member(MOD, BOB, "foo"), False, reason="unknown membership"),
    Case("missing-membership", (M, MOD, BOB, {"displayname": "x"}), False, reason="membership"),
    Case("member-without-state-key", (M, MOD, None, JOIN), False, reason="state_key"),
]


@pytest.mark.parametrize(
    ("case", "room_version"),
    expand(JOIN_CASES + INVITE_CASES + LEAVE_CASES + BAN_CASES + KNOCK_CASES + OTHER_CASES),
)
def test_membership_rules(case: Case, room_version: RoomVersion) -> None:
    run(case, room_version)
