"""Test vectors from the specification's appendices.

Canonical JSON examples (Appendices, "Canonical JSON" / "Examples") and the
"Cryptographic Test Vectors" (JSON signing and event signing with the
published seed ``YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1``).
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import pytest
from signedjson.sign import sign_json, verify_signed_json

from trioserver.events import (
    RoomVersions,
    add_hashes_and_signatures,
    canonical_json,
    check_content_hash,
    compute_reference_hash,
    prune_event_dict,
    verify_event_signature,
)

from tests.unit.events.helpers import SIGNING_KEY, VERIFY_KEY

CANONICAL_EXAMPLES = [
    ("{}", "{}"),
    ('{"one": 1, "two": "Two"}', '{"one":1,"two":"Two"}'),
    ('{"b": "2", "a": "1"}', '{"a":"1","b":"2"}'),
    ('{"b":"2","a":"1"}', '{"a":"1","b":"2"}'),
    (
        """{"auth": {"success": true, "mxid": "@john.doe:example.com",
            "profile": {"display_name": "John Doe", "three_pids": [
                {"medium": "email", "address": "john.doe@example.org"},
                {"medium": "msisdn", "address": "123456789"}]}}}""",
        '{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe",'
        '"three_pids":[{"address":"john.doe@example.org","medium":"email"},'
        '{"address":"123456789","medium":"msisdn"}]},"success":true}}',
    ),
    ('{"a": "日本語"}', '{"a":"日本語"}'),
    ('{"本": 2, "日": 1}', '{"日":1,"本":2}'),
    ('{"a": "\\u65E5"}', '{"a":"日"}'),
    ('{"a": null}', '{"a":null}'),
]


@pytest.mark.parametrize(("source", "expected"), CANONICAL_EXAMPLES)
def test_canonical_json_examples(source: str, expected: str) -> None:
    assert canonical_json(json.loads(source)) == expected.encode("utf-8")


def _integral_float_as_int(text: str) -> int | float:
    value = float(text)
    return int(value) if value.is_integer() else value


def test_canonical_json_number_example() -> None:
    # {"a": -0, "b": 1e10} -> {"a":0,"b":10000000000}.  Python's json module
    # already reads -0 as the integer 0; 1e10 is a float, which canonical JSON
    # forbids, so a parser must turn integral exponent forms into integers.
    # That is a parsing concern, shown here with json.loads' parse_float hook.
    value = json.loads('{"a": -0, "b": 1e10}', parse_float=_integral_float_as_int)
    assert canonical_json(value) == b'{"a":0,"b":10000000000}'


JSON_SIGNING = [
    ({}, "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"),
    (
        {"one": 1, "two": "Two"},
        "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw",
    ),
]


@pytest.mark.parametrize(("obj", "signature"), JSON_SIGNING)
def test_json_signing_vectors(obj: dict[str, Any], signature: str) -> None:
    signed = sign_json(copy.deepcopy(obj), "domain", SIGNING_KEY)
    assert signed == {**obj, "signatures": {"domain": {"ed25519:1": signature}}}
    verify_signed_json(signed, "domain", VERIFY_KEY)


MINIMAL_EVENT: dict[str, Any] = {
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "signatures": {},
    "hashes": {},
    "type": "X",
    "content": {},
    "prev_events": [],
    "auth_events": [],
    "depth": 3,
    "unsigned": {"age_ts": 1000000},
}
MINIMAL_EVENT_SIGNED = {
    **MINIMAL_EVENT,
    "hashes": {"sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},
    "signatures": {
        "domain": {
            "ed25519:1": "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5"
            "KLjAWbOoMszkwsQma+lYAg"
        }
    },
}
MESSAGE_EVENT: dict[str, Any] = {
    "content": {"body": "Here is the message content"},
    "event_id": "$0:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "type": "m.room.message",
    "room_id": "!r:domain",
    "sender": "@u:domain",
    "signatures": {},
    "unsigned": {"age_ts": 1000000},
}
MESSAGE_EVENT_SIGNED = {
    **MESSAGE_EVENT,
    "hashes": {"sha256": "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"},
    "signatures": {
        "domain": {
            "ed25519:1": "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn2"
            "41eYHYMGCA5McEiVPdhzBA"
        }
    },
}

# The vectors sign with the v1 redaction algorithm (which keeps "origin"); every
# version up to 10 redacts these two events identically.
PRE_V11_VERSIONS = [RoomVersions.V1, RoomVersions.V6, RoomVersions.V10]


@pytest.mark.parametrize("room_version", PRE_V11_VERSIONS, ids=lambda v: f"v{v.identifier}")
@pytest.mark.parametrize(
    ("event", "expected"),
    [(MINIMAL_EVENT, MINIMAL_EVENT_SIGNED), (MESSAGE_EVENT, MESSAGE_EVENT_SIGNED)],
    ids=["minimal", "message"],
)
def test_event_signing_vectors(
    room_version: Any, event: dict[str, Any], expected: dict[str, Any]
) -> None:
    pdu = copy.deepcopy(event)
    add_hashes_and_signatures(room_version, pdu, "domain", SIGNING_KEY)
    assert pdu == expected
    assert check_content_hash(pdu)
    verify_event_signature(room_version, pdu, "domain", VERIFY_KEY)


def test_event_signing_vector_reference_hash() -> None:
    # The spec gives no reference hash, so compute it independently: the
    # message event redacted by hand (v1 rules keep "origin" and "event_id",
    # drop the body), without signatures and unsigned, as canonical JSON.
    by_hand = {
        "content": {},
        "event_id": "$0:domain",
        "hashes": {"sha256": "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"},
        "origin": "domain",
        "origin_server_ts": 1000000,
        "room_id": "!r:domain",
        "sender": "@u:domain",
        "type": "m.room.message",
    }
    encoded = json.dumps(by_hand, sort_keys=True, separators=(",", ":")).encode()
    expected = hashlib.sha256(encoded).digest()
    assert compute_reference_hash(RoomVersions.V1, MESSAGE_EVENT_SIGNED) == expected
    assert prune_event_dict(RoomVersions.V1, MESSAGE_EVENT_SIGNED) == {
        **by_hand,
        "signatures": MESSAGE_EVENT_SIGNED["signatures"],
    }


def test_event_signing_vector_v11_differs() -> None:
    # v11 no longer protects "origin", so the same event signs differently.
    pdu = copy.deepcopy(MINIMAL_EVENT)
    add_hashes_and_signatures(RoomVersions.V11, pdu, "domain", SIGNING_KEY)
    assert pdu["hashes"] == MINIMAL_EVENT_SIGNED["hashes"]
    assert pdu["signatures"] != MINIMAL_EVENT_SIGNED["signatures"]
    verify_event_signature(RoomVersions.V11, pdu, "domain", VERIFY_KEY)
