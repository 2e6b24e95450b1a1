"""Playing another server in a federation test: signed Server-Server requests and events made
with a real server's own key (as a hostile or broken server would send them), to check what
the receiving server does with them."""

from __future__ import annotations

import ssl
import time
from typing import Any
from urllib.parse import quote

import attrs
import httpx
import orjson
from signedjson.types import SigningKey

from trioserver.events import KNOWN_ROOM_VERSIONS, Event, add_hashes_and_signatures
from trioserver.federation.request_auth import authorization_header
from trioserver.keys import load_key_file

from tests.integration.federation_helpers import FederatedServer, TlsFiles


@attrs.frozen
class ActingServer:
    """Requests and events as `name`, signed with `key` (a server's own, or a stranger's)."""

    name: str
    key: SigningKey
    tls: TlsFiles

    @classmethod
    def of(cls, server: FederatedServer, tls: TlsFiles) -> ActingServer:
        """Act as `server`, with its signing key."""
        config = server.hs.config
        return cls(server.name, load_key_file(config.data_path(config.signing_key_path)), tls)

    async def request(
        self, destination: FederatedServer, method: str, path: str, content: Any = None
    ) -> httpx.Response:
        """A signed request to `destination`'s federation listener."""
        header = authorization_header(
            method=method,
            uri=path,
            origin=self.name,
            destination=destination.name,
            signing_key=self.key,
            content=content,
        )
        port = destination.name.rsplit(":", 1)[1]
        context = ssl.create_default_context(cafile=self.tls.ca_path)
        async with httpx.AsyncClient(verify=context, timeout=30) as http:
            return await http.request(
                method,
                f"https://localhost:{port}{path}",
                content=None if content is None else orjson.dumps(content),
                headers={"Authorization": header, "Content-Type": "application/json"},
            )

    async def pdu(self, destination: FederatedServer, event_id: str) -> dict[str, Any]:
        """An event as `destination` serves it over federation."""
        response = await self.request(
            destination, "GET", f"/_matrix/federation/v1/event/{quote(event_id, safe='')}"
        )
        assert response.status_code == 200, response.text
        pdu: dict[str, Any] = response.json()["pdus"][0]
        return pdu

    def event(
        self,
        room_version: str,
        *,
        room_id: str,
        sender: str,
        event_type: str,
        content: dict[str, Any],
        prev: dict[str, Any],
        auth_event_ids: list[str],
        state_key: str | None = None,
        sign_as: str | None = None,
    ) -> Event:
        """A signed event after `prev` (a PDU), as this server (or `sign_as`) would make it."""
        version = KNOWN_ROOM_VERSIONS[room_version]
        pdu: dict[str, Any] = {
            "room_id": room_id,
            "sender": sender,
            "type": event_type,
            "content": content,
            "depth": int(prev["depth"]) + 1,
            "origin_server_ts": int(time.time() * 1000),
            "prev_events": [Event.from_pdu(version, prev).event_id],
            "auth_events": auth_event_ids,
        }
        if state_key is not None:
            pdu["state_key"] = state_key
        add_hashes_and_signatures(version, pdu, sign_as or self.name, self.key)
        return Event.from_pdu(version, pdu)

    async def send(self, destination: FederatedServer, pdus: list[dict[str, Any]]) -> Any:
        """PUT a transaction of `pdus`; the decoded answer."""
        txn = f"t{time.monotonic_ns()}"
        body = {"origin": self.name, "origin_server_ts": int(time.time() * 1000), "pdus": pdus}
        response = await self.request(
            destination, "PUT", f"/_matrix/federation/v1/send/{txn}", body
        )
        assert response.status_code == 200, response.text
        return response.json()
