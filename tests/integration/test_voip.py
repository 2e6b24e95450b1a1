"""GET /voip/turnServer and the third-party lookups over real HTTP, and the [voip] config."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from trioserver.config import config_from_mapping
from trioserver.errors import ConfigError
from trioserver.testing import InProcessServer, serve_in_process

from tests.integration.client import V3, Client, assert_error, assert_ok
from tests.integration.guest_helpers import GUEST_REGISTRATION, register_guest

URIS = ["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349"]


async def user(hs: InProcessServer, http: httpx.AsyncClient, name: str) -> Client:
    registered = await hs.register_user(name, "pw")
    return Client(http, registered.user_id, registered.access_token, registered.device_id)


async def test_no_turn_server_configured(alice: Client) -> None:
    assert assert_ok(await alice.get("/voip/turnServer")) == {}


async def test_shared_secret_credentials() -> None:
    voip = {"turn_uris": URIS, "turn_shared_secret": "s3cret", "turn_user_lifetime": 3600}
    async with (
        serve_in_process(voip=voip) as hs,
        httpx.AsyncClient(base_url=hs.base_url) as http,
    ):
        carol = await user(hs, http, "carol")
        before = time.time()
        body = assert_ok(await carol.get("/voip/turnServer"))
        after = time.time()
    assert set(body) == {"username", "password", "uris", "ttl"}
    assert body["uris"] == URIS
    assert body["ttl"] == 3600
    expiry, _, user_id = body["username"].partition(":")
    assert user_id == carol.user_id
    assert int(before) + 3600 <= int(expiry) <= int(after) + 3600
    # What coturn checks with `use-auth-secret`: base64(HMAC-SHA1(secret, username)).
    mac = hmac.new(b"s3cret", body["username"].encode(), hashlib.sha1).digest()
    assert body["password"] == base64.b64encode(mac).decode()


async def test_static_credentials_and_guests() -> None:
    voip = {"turn_uris": URIS[:1], "turn_username": "u", "turn_password": "p"}
    async with (
        serve_in_process(voip=voip, registration=GUEST_REGISTRATION) as hs,
        httpx.AsyncClient(base_url=hs.base_url) as http,
    ):
        carol = await user(hs, http, "carol")
        body = assert_ok(await carol.get("/voip/turnServer"))
        assert body == {"username": "u", "password": "p", "uris": URIS[:1], "ttl": 86400}
        # Guests get TURN servers by default (Synapse's turn_allow_guests = true).
        guest = await register_guest(http)
        assert assert_ok(await guest.get("/voip/turnServer"))["username"] == "u"


async def test_guests_can_be_refused() -> None:
    voip = {"turn_uris": URIS, "turn_shared_secret": "x", "turn_allow_guests": False}
    async with (
        serve_in_process(voip=voip, registration=GUEST_REGISTRATION) as hs,
        httpx.AsyncClient(base_url=hs.base_url) as http,
    ):
        guest = await register_guest(http)
        assert_error(await guest.get("/voip/turnServer"), 403, "M_FORBIDDEN")
        carol = await user(hs, http, "carol")
        assert_ok(await carol.get("/voip/turnServer"))


@pytest.mark.parametrize(
    ("voip", "expected"),
    [
        ({"turn_uris": ["stun:x.org"]}, "config.voip.turn_uris: 'stun:x.org' is not a turn:"),
        ({"turn_uris": "turn:x.org"}, "config.voip.turn_uris: expected an array"),
        ({"turn_user_lifetime": 0}, "config.voip.turn_user_lifetime: must be at least 1"),
        ({"turn_user_lifetime": "1h"}, "config.voip.turn_user_lifetime: expected an integer"),
        ({"turn_username": "u"}, "turn_username and turn_password must be set together"),
        ({"turn_allow_guests": "yes"}, "config.voip.turn_allow_guests: expected a boolean"),
        ({"turn_url": "turn:x.org"}, "config.voip: unknown key turn_url"),
    ],
)
def test_bad_voip_config(voip: dict[str, Any], expected: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping({"voip": voip}, base_dir=tmp_path)
    assert expected in str(caught.value)


async def test_third_party_lookups_find_nothing(alice: Client, http: httpx.AsyncClient) -> None:
    assert assert_ok(await alice.get("/thirdparty/protocols")) == {}
    assert_error(await alice.get("/thirdparty/protocol/irc"), 404, "M_NOT_FOUND")
    for path in (
        "/thirdparty/location",
        "/thirdparty/location/irc",
        "/thirdparty/user",
        "/thirdparty/user/irc",
    ):
        response = await alice.get(path, params={"alias": "#x:irc", "userid": "@x:irc"})
        assert response.status_code == 200, response.text
        assert response.json() == []
    for path in ("/thirdparty/protocols", "/voip/turnServer"):
        assert_error(await http.get(V3 + path), 401, "M_MISSING_TOKEN")
