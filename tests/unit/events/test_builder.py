"""build_event: complete, hashed and signed events in every room version."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from signedjson.sign import verify_signed_json
from unpaddedbase64 import encode_base64

from trioserver.events import (
    KNOWN_ROOM_VERSIONS,
    InvalidEventError,
    RoomVersion,
    RoomVersions,
    build_event,
    canonical_json,
    check_content_hash,
    compute_content_hash,
    prune_event_dict,
)

from tests.unit.events.helpers import ALICE, CREATOR, SIGNING_KEY, VERIFY_KEY, Room

ALL_VERSIONS = list(KNOWN_ROOM_VERSIONS.values())


def vid(version: RoomVersion) -> str:
    return f"v{version.identifier}"


def _build(version: RoomVersion, **overrides: Any) -> Any:
    args: dict[str, Any] = {
        "type": "m.room.message",
        "sender": ALICE,
        "content": {"body": "hello"},
        "room_id": "!room:hs.test" if not version.room_id_from_create_event else "!" + "A" * 43,
        "prev_event_ids": [],
        "auth_event_ids": [],
        "depth": 2,
        "origin_server_ts": 1_700_000_000_000,
        "server_name": "hs.test",
        "signing_key": SIGNING_KEY,
    }
    args.update(overrides)
    return build_event(version, **args)


@pytest.mark.parametrize("room_version", ALL_VERSIONS, ids=vid)
def test_built_event_is_hashed_signed_and_identified(room_version: RoomVersion) -> None:
    room = Room(room_version)
    event = room.event("m.room.message", ALICE, {"body": "hello"})
    pdu = event.get_pdu_json()
    # Content hash.
    assert check_content_hash(pdu)
    assert pdu["hashes"]["sha256"] == encode_base64(compute_content_hash(pdu))
    # The signature verifies with the server's verify key, via signedjson directly.
    verify_signed_json(prune_event_dict(room_version, pdu), "hs.test", VERIFY_KEY)
    # The event ID is the recomputed reference hash (v3+).
    if not room_version.event_id_in_pdu:
        pruned = prune_event_dict(room_version, pdu)
        del pruned["signatures"]
        digest = hashlib.sha256(canonical_json(pruned)).digest()
        urlsafe = room_version.identifier != "3"
        assert event.event_id == "$" + encode_base64(digest, urlsafe=urlsafe)
    assert set(pdu) >= {
        "type",
        "sender",
        "content",
        "room_id",
        "prev_events",
        "auth_events",
        "depth",
        "origin_server_ts",
        "hashes",
        "signatures",
    }
    assert "origin" not in pdu
    assert "unsigned" not in pdu


@pytest.mark.parametrize("room_version", ALL_VERSIONS, ids=vid)
def test_origin_only_where_the_room_version_has_it(room_version: RoomVersion) -> None:
    pdu = _build(room_version, origin="hs.test").get_pdu_json()
    assert ("origin" in pdu) is (not room_version.updated_redaction_rules)


def test_v12_create_event_has_no_room_id() -> None:
    create = _build(
        RoomVersions.V12,
        type="m.room.create",
        state_key="",
        content={"room_version": "12"},
        room_id=None,
        sender=CREATOR,
    )
    assert "room_id" not in create.get_pdu_json()
    assert create.room_id == "!" + create.event_id[1:]


@pytest.mark.parametrize(
    ("version", "overrides", "message"),
    [
        (
            RoomVersions.V12,
            {"type": "m.room.create", "state_key": "", "room_id": "!x"},
            "no room_id",
        ),
        (RoomVersions.V11, {"room_id": None}, "room_id is required"),
        (RoomVersions.V12, {"room_id": None}, "room_id is required"),
        (
            RoomVersions.V12,
            {"room_id": "!" + "A" * 43, "auth_event_ids": ["$" + "A" * 43]},
            "must not list the create event",
        ),
        (RoomVersions.V11, {"redacts": "$x"}, "only valid for m.room.redaction"),
        (RoomVersions.V1, {"prev_event_ids": ["$a:hs.test"]}, "reference hash"),
    ],
)
def test_inconsistent_arguments_are_refused(
    version: RoomVersion, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        _build(version, **overrides)


def test_v1_event_refs_carry_the_given_reference_hashes() -> None:
    digest = hashlib.sha256(b"x").digest()
    event = _build(
        RoomVersions.V1, prev_event_ids=["$a:hs.test"], reference_hashes={"$a:hs.test": digest}
    )
    assert event.get_pdu_json()["prev_events"] == [
        ["$a:hs.test", {"sha256": encode_base64(digest)}]
    ]
    assert event.event_id.endswith(":hs.test")


@pytest.mark.parametrize(
    ("version", "expected"),
    [(RoomVersions.V5, 2**63 - 1), (RoomVersions.V6, 2**53 - 1), (RoomVersions.V12, 2**53 - 1)],
)
def test_depth_is_capped_at_the_limit(version: RoomVersion, expected: int) -> None:
    assert _build(version, depth=2**70).depth == expected


def test_content_is_copied() -> None:
    content: dict[str, Any] = {"body": "x", "nested": {"a": 1}}
    event = _build(RoomVersions.V11, content=content)
    content["nested"]["a"] = 2
    assert event.content["nested"] == {"a": 1}


@pytest.mark.parametrize(
    ("version", "overrides"),
    [
        (RoomVersions.V11, {"content": {"body": "x" * 70000}}),
        (RoomVersions.V11, {"state_key": "k" * 256, "type": "m.custom"}),
        (RoomVersions.V11, {"type": "t" * 256}),
        (RoomVersions.V11, {"content": {"n": 2**53}}),
        (RoomVersions.V6, {"content": {"f": 1.5}}),
        (RoomVersions.V11, {"prev_event_ids": [f"${n}" for n in range(21)]}),
        (RoomVersions.V11, {"auth_event_ids": [f"${n}" for n in range(11)]}),
        (RoomVersions.V11, {"depth": -1}),
    ],
)
def test_limits_are_enforced(version: RoomVersion, overrides: dict[str, Any]) -> None:
    with pytest.raises(InvalidEventError):
        _build(version, **overrides)


@pytest.mark.parametrize("content", [{"n": 2**53}, {"f": 1.5}], ids=["big-int", "float"])
def test_v5_does_not_enforce_canonical_json_values(content: dict[str, Any]) -> None:
    assert _build(RoomVersions.V5, content=content).content == content


def test_state_key_of_255_bytes_is_allowed() -> None:
    event = _build(RoomVersions.V11, type="m.custom", state_key="é" * 127 + "k")
    assert event.state_key is not None
    assert len(event.state_key.encode()) == 255
