"""Event ID and room ID formats per room version, and hash/signature checks."""

from __future__ import annotations

import hashlib
import re

import pytest
from signedjson.key import generate_signing_key, get_verify_key
from unpaddedbase64 import encode_base64

from trioserver.events import (
    KNOWN_ROOM_VERSIONS,
    Event,
    EventSignatureError,
    RoomVersion,
    RoomVersions,
    canonical_json,
    check_content_hash,
    compute_event_id,
    create_event_id_from_room_id,
    is_valid_event_id,
    is_valid_room_id,
    prune_event_dict,
    room_id_from_create_event_id,
    verify_event_signature,
)

from tests.unit.events.helpers import ALICE, CREATOR, VERIFY_KEY, Room

ALL_VERSIONS = list(KNOWN_ROOM_VERSIONS.values())


def vid(version: RoomVersion) -> str:
    return f"v{version.identifier}"


@pytest.mark.parametrize("room_version", [RoomVersions.V1, RoomVersions.V2], ids=vid)
def test_v1_v2_event_ids_are_random_and_carried_in_the_pdu(room_version: RoomVersion) -> None:
    room = Room(room_version)
    first = room.event("m.room.message", ALICE, {"body": "hi"})
    second = room.event("m.room.message", ALICE, {"body": "hi"})
    assert re.fullmatch(r"\$[A-Za-z0-9]{24}:hs\.test", first.event_id)
    assert first.event_id != second.event_id
    assert first.get_pdu_json()["event_id"] == first.event_id
    assert is_valid_event_id(first.event_id, room_version)
    with pytest.raises(ValueError, match="not hashes"):
        compute_event_id(room_version, first.get_pdu_json())


def _reference_hash_by_hand(room_version: RoomVersion, event: Event) -> bytes:
    pruned = prune_event_dict(room_version, event.get_pdu_json())
    del pruned["signatures"]
    return hashlib.sha256(canonical_json(pruned)).digest()


@pytest.mark.parametrize("room_version", ALL_VERSIONS[2:], ids=vid)
def test_hash_event_ids(room_version: RoomVersion) -> None:
    room = Room(room_version)
    event = room.event("m.room.message", ALICE, {"body": "hi"})
    urlsafe = room_version.identifier != "3"
    expected = "$" + encode_base64(_reference_hash_by_hand(room_version, event), urlsafe=urlsafe)
    assert event.event_id == expected
    assert "event_id" not in event.get_pdu_json()
    assert is_valid_event_id(event.event_id, room_version)
    # Received over federation, the ID is recomputed from the PDU.
    assert Event.from_pdu(room_version, event.get_pdu_json()).event_id == event.event_id


def _event_with_slash_or_plus_in_v3_id() -> Event:
    room = Room(RoomVersions.V3)
    for n in range(200):
        event = room.event("m.room.message", ALICE, {"body": str(n)})
        if "/" in event.event_id or "+" in event.event_id:
            return event
    raise AssertionError("no event ID with '/' or '+' found")


def test_v3_uses_standard_and_v4_url_safe_base64() -> None:
    v3_event = _event_with_slash_or_plus_in_v3_id()
    # v3 and v4 redact identically, so the same PDU has the same hash in both.
    v4_id = compute_event_id(RoomVersions.V4, v3_event.get_pdu_json())
    assert v4_id == v3_event.event_id.replace("+", "-").replace("/", "_")
    assert is_valid_event_id(v3_event.event_id, RoomVersions.V3)
    assert not is_valid_event_id(v3_event.event_id, RoomVersions.V4)


def test_event_id_does_not_depend_on_unsigned_signatures_or_redactable_content() -> None:
    room = Room(RoomVersions.V10)
    event = room.event("m.room.message", ALICE, {"body": "secret"})
    pdu = event.get_pdu_json()
    pdu["unsigned"] = {"age": 5}
    pdu["signatures"]["other.test"] = {"ed25519:x": "c2ln"}
    assert Event.from_pdu(RoomVersions.V10, pdu).event_id == event.event_id
    assert event.redacted().event_id == event.event_id
    assert compute_event_id(RoomVersions.V10, prune_event_dict(RoomVersions.V10, pdu)) == (
        event.event_id
    )
    # Content is covered through the content hash: changing it without
    # re-hashing leaves the ID alone but breaks the content hash...
    pdu["content"]["body"] = "changed"
    assert Event.from_pdu(RoomVersions.V10, pdu).event_id == event.event_id
    assert not check_content_hash(pdu)
    # ...while changing a protected key changes the ID.
    pdu["origin_server_ts"] += 1
    assert Event.from_pdu(RoomVersions.V10, pdu).event_id != event.event_id


def test_v12_room_id_is_derived_from_the_create_event() -> None:
    room = Room(RoomVersions.V12)
    create = room.create
    assert "room_id" not in create.get_pdu_json()
    assert create.room_id == "!" + create.event_id[1:]
    assert create.room_id == room_id_from_create_event_id(create.event_id)
    assert create_event_id_from_room_id(create.room_id) == create.event_id
    assert is_valid_room_id(create.room_id, RoomVersions.V12)
    assert not is_valid_room_id(create.room_id.replace("!", "!x:", 1), RoomVersions.V12)
    message = room.event("m.room.message", CREATOR, {"body": "hi"})
    assert message.room_id == create.room_id
    # The create event is never an auth event in v12.
    assert create.event_id not in message.auth_event_ids


@pytest.mark.parametrize("room_version", ALL_VERSIONS, ids=vid)
def test_content_hash_and_signature_of_built_events(room_version: RoomVersion) -> None:
    room = Room(room_version)
    event = room.event("m.room.topic", CREATOR, {"topic": "t"}, state_key="")
    pdu = event.get_pdu_json()
    assert check_content_hash(pdu)
    verify_event_signature(room_version, pdu, "hs.test", VERIFY_KEY)
    # A redacted copy still verifies (signatures cover the redacted form)...
    verify_event_signature(room_version, event.redacted().get_pdu_json(), "hs.test", VERIFY_KEY)
    # ...but its content hash no longer matches.
    assert not check_content_hash(event.redacted().get_pdu_json())
    # Changing a protected key invalidates the signature.
    pdu["sender"] = "@mallory:hs.test"
    with pytest.raises(EventSignatureError):
        verify_event_signature(room_version, pdu, "hs.test", VERIFY_KEY)


def test_signature_from_the_wrong_key_or_server_is_refused() -> None:
    event = Room(RoomVersions.V11).event("m.room.message", ALICE, {"body": "x"})
    other_key = get_verify_key(generate_signing_key("1"))
    with pytest.raises(EventSignatureError):
        verify_event_signature(RoomVersions.V11, event.get_pdu_json(), "hs.test", other_key)
    with pytest.raises(EventSignatureError):
        verify_event_signature(RoomVersions.V11, event.get_pdu_json(), "other.test", VERIFY_KEY)


@pytest.mark.parametrize(
    "hashes",
    [None, "x", {}, {"sha256": 5}, {"sha256": "!!!not base64"}, {"sha256": "AAAA"}],
)
def test_check_content_hash_handles_malformed_hashes(hashes: object) -> None:
    pdu = Room(RoomVersions.V11).event("m.room.message", ALICE, {}).get_pdu_json()
    pdu["hashes"] = hashes
    assert not check_content_hash(pdu)
