"""trioserver federating with a real Synapse, over TLS on loopback (issue 15): a room on each
side joined from the other, messages both ways.

Synapse is installed from PyPI into the benchmarks' cached venv the first time (see
`tests.integration.synapse_peer`), so on a fresh machine this test installs it (about half a
minute) rather than skipping. Both servers trust one test CA and serve the same certificate
for localhost/127.0.0.1; each is named ``localhost:PORT`` with its federation listener at
PORT.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote

import httpx

from trioserver.testing import serve_in_process

from tests.integration.client import Client, assert_ok
from tests.integration.federation_helpers import (
    FederatedServer,
    federation_overrides,
    free_port,
    joined_members,
    make_test_ca,
    texts,
    wait_for,
)
from tests.integration.room_helpers import create_room, send_text
from tests.integration.synapse_peer import SynapsePeer, synapse_peer

# Synapse is slow to fetch keys, join and send its first transaction to a new destination.
WAIT_S = 90.0


@asynccontextmanager
async def trioserver_and_synapse() -> AsyncIterator[tuple[FederatedServer, SynapsePeer]]:
    """A trioserver and a Synapse that federate with each other, for the block."""
    with tempfile.TemporaryDirectory(prefix="trioserver-synapse-") as tmp:
        tls = make_test_ca(Path(tmp))
        synapse_dir = Path(tmp) / "synapse"
        synapse_dir.mkdir()
        async with (
            serve_in_process(
                via_worker=False, events_on_worker=False, **federation_overrides(tls, free_port())
            ) as hs,
            httpx.AsyncClient(base_url=hs.base_url, timeout=30) as http,
            synapse_peer(tls, synapse_dir) as synapse,
        ):
            yield FederatedServer(hs, http), synapse


async def _join_via(client: Client, room_id: str, server: str) -> None:
    joined = assert_ok(
        await client.post(f"/join/{quote(room_id)}", {}, params={"server_name": server})
    )
    assert joined["room_id"] == room_id


async def _exchange_messages(
    host: Client, guest: Client, room_id: str, host_side: str, guest_side: str
) -> None:
    """`host`'s server made the room and sent "before the join" in it, then `guest` joined it
    from the other server: that message reaches the guest (backfilled by its server), then a
    message goes each way, each read back on the other server."""

    async def member_on_host() -> bool:
        return guest.user_id in await joined_members(host, room_id)

    await wait_for(member_on_host, f"{guest.user_id}'s join on {host_side}", seconds=WAIT_S)
    assert await joined_members(guest, room_id) == {host.user_id, guest.user_id}

    async def seen(client: Client, body: str) -> bool:
        return body in await texts(client, room_id)

    await wait_for(
        lambda: seen(guest, "before the join"), f"the history on {guest_side}", seconds=WAIT_S
    )
    await send_text(host, room_id, f"hello from {host_side}")
    await wait_for(
        lambda: seen(guest, f"hello from {host_side}"),
        f"{host_side}'s message on {guest_side}",
        seconds=WAIT_S,
    )
    await send_text(guest, room_id, f"hello from {guest_side}")
    await wait_for(
        lambda: seen(host, f"hello from {guest_side}"),
        f"{guest_side}'s message on {host_side}",
        seconds=WAIT_S,
    )
    # The conversation is the same, in the same order, on both servers.
    wanted = ["before the join", f"hello from {host_side}", f"hello from {guest_side}"]
    assert await texts(host, room_id) == wanted
    assert await texts(guest, room_id) == wanted


async def test_a_synapse_user_joins_a_trioserver_room() -> None:
    async with trioserver_and_synapse() as (trio_hs, synapse):
        alice = await trio_hs.user("alice")
        bob = await synapse.user("bob")
        room_id = await create_room(alice, preset="public_chat", name="On trioserver")
        await send_text(alice, room_id, "before the join")
        await _join_via(bob, room_id, trio_hs.name)
        # Synapse holds the room's state now, from trioserver's send_join answer.
        name = assert_ok(await bob.get(f"/rooms/{quote(room_id)}/state/m.room.name"))
        assert name == {"name": "On trioserver"}
        await _exchange_messages(alice, bob, room_id, "trioserver", "synapse")


async def test_a_trioserver_user_joins_a_synapse_room() -> None:
    async with trioserver_and_synapse() as (trio_hs, synapse):
        alice = await trio_hs.user("alice")
        bob = await synapse.user("bob")
        room_id = await create_room(bob, preset="public_chat", name="On Synapse")
        await send_text(bob, room_id, "before the join")
        await _join_via(alice, room_id, synapse.name)
        # trioserver holds the room's state now, from Synapse's send_join answer.
        name = assert_ok(await alice.get(f"/rooms/{quote(room_id)}/state/m.room.name"))
        assert name == {"name": "On Synapse"}
        await _exchange_messages(bob, alice, room_id, "synapse", "trioserver")
