"""The server starts in-process and answers over real HTTP."""

from __future__ import annotations

import httpx

from trioserver.testing import InProcessServer

from tests.integration.client import Client, assert_ok


async def test_versions_lists_spec_versions(http: httpx.AsyncClient) -> None:
    body = assert_ok(await http.get("/_matrix/client/versions"))
    assert "v1.1" in body["versions"]
    assert "r0.6.1" in body["versions"]
    assert isinstance(body["unstable_features"], dict)


async def test_registered_user_is_who_they_say(hs: InProcessServer, alice: Client) -> None:
    body = assert_ok(await alice.get("/account/whoami"))
    assert body == {"user_id": "@alice:localhost", "device_id": alice.device_id, "is_guest": False}
