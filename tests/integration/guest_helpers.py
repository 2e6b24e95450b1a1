"""Guest accounts in tests: a server that allows them, and registering one over HTTP."""

from __future__ import annotations

import httpx

from tests.integration.client import V3, Client, assert_ok

GUEST_REGISTRATION = {"enabled": True, "bcrypt_rounds": 4, "allow_guest_access": True}


async def register_guest(http: httpx.AsyncClient) -> Client:
    """POST /register?kind=guest; the guest as a client."""
    body = assert_ok(await http.post(f"{V3}/register", params={"kind": "guest"}, json={}))
    return Client(http, body["user_id"], body["access_token"], body["device_id"])
