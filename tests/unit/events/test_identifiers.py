"""Identifier grammar (Appendices, "Identifier Grammar") and canonical JSON values."""

from __future__ import annotations

import pytest

from trioserver.events import (
    InvalidEventError,
    InvalidIdentifierError,
    RoomVersions,
    check_canonical_json_values,
    get_server_name,
    is_valid_event_id,
    is_valid_room_alias,
    is_valid_room_id,
    is_valid_server_name,
    is_valid_user_id,
    parse_server_name,
    parse_user_id,
)


@pytest.mark.parametrize(
    ("server_name", "expected"),
    [
        # The spec's examples of valid server names.
        ("matrix.org", ("matrix.org", None)),
        ("matrix.org:8888", ("matrix.org", 8888)),
        ("1.2.3.4", ("1.2.3.4", None)),
        ("1.2.3.4:1234", ("1.2.3.4", 1234)),
        ("[1234:5678::abcd]", ("[1234:5678::abcd]", None)),
        ("[1234:5678::abcd]:5678", ("[1234:5678::abcd]", 5678)),
        ("localhost", ("localhost", None)),
        ("[::ffff:1.2.3.4]:8448", ("[::ffff:1.2.3.4]", 8448)),
    ],
)
def test_valid_server_names(server_name: str, expected: tuple[str, int | None]) -> None:
    assert parse_server_name(server_name) == expected
    assert is_valid_server_name(server_name)


@pytest.mark.parametrize(
    "server_name",
    [
        "",
        "exa mple.org",
        "example.org:",
        "example.org:123456",
        "example.org:port",
        "1.2.3.256",
        "[1234:5678::abcd",
        "[not:an:ip]",
        "[1::2::3]",
        "::1",
        "[fe80::1%eth0]",
        "ex_ample.org",
        "a" * 256,
        "example.org\n",
    ],
)
def test_invalid_server_names(server_name: str) -> None:
    assert not is_valid_server_name(server_name)
    with pytest.raises(InvalidIdentifierError):
        parse_server_name(server_name)


@pytest.mark.parametrize(
    ("user_id", "strict", "historical"),
    [
        ("@alice:example.org", True, True),
        ("@a.b_c=d-e/f+g:example.org:8448", True, True),
        ("@1234:[::1]", True, True),
        ("@Alice:example.org", False, True),  # upper case: historical only
        ("@:example.org", False, True),  # empty localpart: historical only
        ("@ä!#:example.org", False, True),
        ("@a:b:example.org", False, False),  # "b:example.org" is not a server name
        ("alice:example.org", False, False),
        ("@alice", False, False),
        ("@alice:", False, False),
        ("@al\x00ice:example.org", False, False),
        ("@\ud800:example.org", False, False),
        ("@" + "a" * 250 + ":example.org", False, False),  # > 255 bytes
        ("#alice:example.org", False, False),
    ],
)
def test_user_ids(user_id: str, strict: bool, historical: bool) -> None:
    assert is_valid_user_id(user_id) is strict
    assert is_valid_user_id(user_id, historical=True) is historical
    if strict:
        assert parse_user_id(user_id) == tuple(user_id[1:].split(":", 1))
    else:
        with pytest.raises(InvalidIdentifierError):
            parse_user_id(user_id)


def test_user_id_edge_lengths() -> None:
    user_id = "@" + "a" * (255 - len("@:hs.test")) + ":hs.test"
    assert len(user_id) == 255
    assert is_valid_user_id(user_id)
    assert not is_valid_user_id(5)


@pytest.mark.parametrize(
    ("room_id", "v11", "v12"),
    [
        ("!abc:example.org", True, False),
        ("!:example.org", True, False),
        ("!" + "A" * 43, False, True),
        ("!" + "A_-" * 14 + "x", False, True),
        ("!" + "A/+" * 14 + "x", False, False),  # standard base64 is not URL-safe
        ("!" + "A" * 42, False, False),
        ("abc:example.org", False, False),
        ("!abc", False, False),
    ],
)
def test_room_ids(room_id: str, v11: bool, v12: bool) -> None:
    assert is_valid_room_id(room_id, RoomVersions.V11) is v11
    assert is_valid_room_id(room_id, RoomVersions.V12) is v12
    assert is_valid_room_id(room_id) is (v11 or v12)


@pytest.mark.parametrize(
    ("alias", "valid"),
    [
        ("#room:example.org", True),
        ("#日本:example.org", True),
        ("#room", False),
        ("#ro:om:example.org", False),
        ("!room:example.org", False),
        ("#room:bad_server", False),
    ],
)
def test_room_aliases(alias: str, valid: bool) -> None:
    assert is_valid_room_alias(alias) is valid


@pytest.mark.parametrize(
    ("event_id", "v1", "v3", "v4"),
    [
        ("$abc:example.org", True, False, False),
        ("$" + "a+/" * 14 + "b", False, True, False),
        ("$" + "a-_" * 14 + "b", False, False, True),
        ("$" + "a" * 43, False, True, True),
        ("abc:example.org", False, False, False),
        ("$" + "a" * 300 + ":example.org", False, False, False),
    ],
)
def test_event_ids(event_id: str, v1: bool, v3: bool, v4: bool) -> None:
    assert is_valid_event_id(event_id, RoomVersions.V1) is v1
    assert is_valid_event_id(event_id, RoomVersions.V3) is v3
    assert is_valid_event_id(event_id, RoomVersions.V10) is v4
    assert is_valid_event_id(event_id) is (v1 or v3 or v4)


def test_get_server_name() -> None:
    assert get_server_name("@a:example.org:8448") == "example.org:8448"
    with pytest.raises(InvalidIdentifierError):
        get_server_name("$hashonly")


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ({"a": [1, "x", None, True, {"b": -(2**53) + 1}]}, True),
        ({"a": 2**53 - 1}, True),
        ({"a": 2**53}, False),
        ({"a": -(2**53)}, False),
        ({"a": 1.0}, False),
        ({"a": [float("nan")]}, False),
        ({"a": {"b": float("inf")}}, False),
        ({"a": object()}, False),
    ],
)
def test_canonical_json_values(value: object, ok: bool) -> None:
    if ok:
        check_canonical_json_values(value)
    else:
        with pytest.raises(InvalidEventError):
            check_canonical_json_values(value)
