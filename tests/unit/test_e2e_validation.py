"""Pure checks of end-to-end key shapes and signatures."""

from __future__ import annotations

from typing import Any

import pytest
from signedjson.key import generate_signing_key, get_verify_key
from signedjson.sign import sign_json
from unpaddedbase64 import encode_base64

from trioserver.errors import MatrixError
from trioserver.handlers.e2e_validation import (
    OneTimeKey,
    check_device_keys,
    check_key_map,
    check_signature,
    device_verify_key,
    matches_stored,
    parse_cross_signing_key,
)

USER = "@alice:blue"


def _device_keys() -> dict[str, Any]:
    return {
        "user_id": USER,
        "device_id": "DEV",
        "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
        "keys": {"ed25519:DEV": "abc"},
        "signatures": {USER: {"ed25519:DEV": "sig"}},
    }


def _cross_signing_key(usage: str = "master") -> tuple[dict[str, Any], Any]:
    key = generate_signing_key("x")
    public = encode_base64(get_verify_key(key).encode())
    key.version = public
    return {"user_id": USER, "usage": [usage], "keys": {f"ed25519:{public}": public}}, key


def test_device_keys_accepted() -> None:
    assert check_device_keys(_device_keys(), USER, "DEV") == _device_keys()


@pytest.mark.parametrize(
    "change",
    [
        {"user_id": "@bob:blue"},
        {"device_id": "OTHER"},
        {"user_id": 1},
        {"algorithms": ["a", 1]},
        {"keys": {"ed25519:DEV": 1}},
        {"keys": None},
        {"signatures": {USER: "sig"}},
        {"signatures": None},
    ],
)
def test_device_keys_rejected(change: dict[str, Any]) -> None:
    with pytest.raises(MatrixError) as info:
        check_device_keys({**_device_keys(), **change}, USER, "DEV")
    assert (info.value.errcode, info.value.status) == ("M_BAD_JSON", 400)


def test_device_keys_must_be_an_object() -> None:
    with pytest.raises(MatrixError):
        check_device_keys([], USER, "DEV")


def test_key_maps() -> None:
    signed = {"key": "k", "signatures": {USER: {"ed25519:DEV": "s"}}}
    assert check_key_map(None, "one_time_keys") == []
    assert check_key_map({"curve25519:A": "k", "signed_curve25519:B": signed}, "x") == [
        OneTimeKey("curve25519", "A", "k"),
        OneTimeKey("signed_curve25519", "B", signed),
    ]
    bad_maps: list[Any] = [
        [],
        {"A": "k"},
        {":A": "k"},
        {"a:": "k"},
        {"a:b:c": "k"},
        {"a:b": 1},
        {"a:b": {"key": "k"}},
        {"a:b": {"signatures": {}}},
    ]
    for bad in bad_maps:
        with pytest.raises(MatrixError):
            check_key_map(bad, "one_time_keys")


def test_cross_signing_key_parsing_and_signatures() -> None:
    master, master_key = _cross_signing_key()
    parsed = parse_cross_signing_key(master, USER, "master")
    assert parsed.public_key == master_key.version
    assert parsed.key_id == f"ed25519:{master_key.version}"
    self_signing, _ = _cross_signing_key("self_signing")
    signed = sign_json(dict(self_signing), USER, master_key)
    check_signature(signed, USER, parsed.verify_key)
    for bad in (self_signing, {**signed, "usage": ["master"]}):
        with pytest.raises(MatrixError) as info:
            check_signature(bad, USER, parsed.verify_key)
        assert info.value.errcode == "M_INVALID_SIGNATURE"


@pytest.mark.parametrize(
    "change",
    [
        {"user_id": "@bob:blue"},
        {"usage": ["self_signing"]},
        {"usage": "master"},
        {"keys": {}},
        {"keys": {"ed25519:a": "a", "ed25519:b": "b"}},
        {"keys": {"curve25519:abc": "abc"}},
        {"keys": {"ed25519:abc": "not base64!"}},
        {"keys": {"ed25519:": "abc"}},
        {"signatures": "x"},
    ],
)
def test_cross_signing_key_rejected(change: dict[str, Any]) -> None:
    master, _ = _cross_signing_key()
    with pytest.raises(MatrixError) as info:
        parse_cross_signing_key({**master, **change}, USER, "master")
    assert info.value.errcode == "M_INVALID_PARAM"


def test_device_verify_key_and_matching() -> None:
    key = generate_signing_key("DEV")
    device = {
        **_device_keys(),
        "keys": {"ed25519:DEV": encode_base64(get_verify_key(key).encode())},
    }
    verify_key = device_verify_key(device, "ed25519:DEV")
    assert verify_key is not None
    check_signature(sign_json(dict(device), USER, key), USER, verify_key)
    assert device_verify_key(device, "ed25519:OTHER") is None
    assert device_verify_key({**device, "keys": {"ed25519:DEV": "!!"}}, "ed25519:DEV") is None
    assert matches_stored({**device, "unsigned": {"x": 1}, "signatures": {}}, device)
    assert not matches_stored({**device, "algorithms": []}, device)
