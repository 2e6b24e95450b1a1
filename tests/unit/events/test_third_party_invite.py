"""Invites made from third-party invites (member rule "If content has a third_party_invite")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from signedjson.key import encode_verify_key_base64, generate_signing_key, get_verify_key
from signedjson.sign import sign_json

from trioserver.events import AuthError, RoomVersion, RoomVersions, auth_types_for_event

from tests.unit.events.helpers import ALICE, BOB, MOD, Room

IDENTITY_KEY = generate_signing_key("0")
IDENTITY_PUBLIC_KEY = encode_verify_key_base64(get_verify_key(IDENTITY_KEY))
OTHER_KEY = generate_signing_key("0")
TOKEN = "abc123"


def _signed(**overrides: Any) -> dict[str, Any]:
    """The identity server's signed object; an override of ``None`` drops the key."""
    signed: dict[str, Any] = {"mxid": BOB, "token": TOKEN, "sender": MOD}
    signed.update(overrides)
    signed = {key: value for key, value in signed.items() if value is not None}
    return sign_json(signed, "id.test", IDENTITY_KEY)


def _room(
    version: RoomVersion, *, tpi_content: dict[str, Any] | None = None, tpi_sender: str = MOD
) -> Room:
    room = Room(version)
    room.set_member(MOD, "join")
    room.set_member(ALICE, "join")
    content = tpi_content or {"display_name": "b...", "public_key": IDENTITY_PUBLIC_KEY}
    room.set_state("m.room.third_party_invite", TOKEN, content, sender=tpi_sender)
    return room


def _invite_content(third_party_invite: Any) -> dict[str, Any]:
    return {"membership": "invite", "third_party_invite": third_party_invite}


def _tamper(signed: dict[str, Any]) -> dict[str, Any]:
    return {**signed, "extra": "not signed"}


CASES: list[tuple[str, Callable[[], Any], str, bool]] = [
    ("valid", lambda: {"display_name": "b", "signed": _signed()}, MOD, True),
    ("no-signed", lambda: {"display_name": "b"}, MOD, False),
    ("not-an-object", lambda: "junk", MOD, False),
    ("signed-not-object", lambda: {"signed": "junk"}, MOD, False),
    ("no-token", lambda: {"signed": _signed(token=None)}, MOD, False),
    ("no-mxid", lambda: {"signed": _signed(mxid=None)}, MOD, False),
    ("mxid-mismatch", lambda: {"signed": _signed(mxid=ALICE)}, MOD, False),
    ("unknown-token", lambda: {"signed": _signed(token="other")}, MOD, False),
    ("sender-did-not-send-3pid-invite", lambda: {"signed": _signed()}, ALICE, False),
    (
        "signed-by-other-key",
        lambda: {"signed": sign_json({"mxid": BOB, "token": TOKEN}, "id.test", OTHER_KEY)},
        MOD,
        False,
    ),
    ("tampered", lambda: {"signed": _tamper(_signed())}, MOD, False),
    ("no-signatures", lambda: {"signed": {"mxid": BOB, "token": TOKEN}}, MOD, False),
    ("signatures-not-object", lambda: {"signed": {**_signed(), "signatures": []}}, MOD, False),
]


@pytest.mark.parametrize(
    "room_version",
    [RoomVersions.V1, RoomVersions.V10, RoomVersions.V12],
    ids=lambda v: f"v{v.identifier}",
)
@pytest.mark.parametrize(("name", "make", "sender", "allowed"), CASES, ids=[c[0] for c in CASES])
def test_third_party_invite(
    room_version: RoomVersion, name: str, make: Callable[[], Any], sender: str, allowed: bool
) -> None:
    room = _room(room_version)
    event = room.event("m.room.member", sender, _invite_content(make()), state_key=BOB)
    if allowed:
        room.check(event)
    else:
        with pytest.raises(AuthError):
            room.check(event)


def test_key_from_public_keys_list() -> None:
    content = {
        "public_key": encode_verify_key_base64(get_verify_key(OTHER_KEY)),
        "public_keys": [{"public_key": "not base64!"}, {"public_key": IDENTITY_PUBLIC_KEY}],
    }
    room = _room(RoomVersions.V11, tpi_content=content)
    room.check(
        room.event("m.room.member", MOD, _invite_content({"signed": _signed()}), state_key=BOB)
    )


def test_banned_target_is_rejected_even_with_valid_signature() -> None:
    room = _room(RoomVersions.V11)
    room.set_member(BOB, "ban", sender=MOD)
    event = room.event("m.room.member", MOD, _invite_content({"signed": _signed()}), state_key=BOB)
    with pytest.raises(AuthError, match="banned"):
        room.check(event)


def test_sender_membership_is_not_rechecked() -> None:
    # The spec's third-party rules do not require the sender to be joined now:
    # they had the invite level when sending m.room.third_party_invite.
    room = _room(RoomVersions.V11)
    room.set_member(MOD, "leave")
    room.check(
        room.event("m.room.member", MOD, _invite_content({"signed": _signed()}), state_key=BOB)
    )


def test_auth_events_selection_includes_the_third_party_invite() -> None:
    content = _invite_content({"signed": _signed()})
    keys = auth_types_for_event(
        RoomVersions.V11, type="m.room.member", sender=MOD, state_key=BOB, content=content
    )
    assert ("m.room.third_party_invite", TOKEN) in keys
