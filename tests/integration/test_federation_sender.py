"""The federation sender behind the real events writer (issue 15).

The components are built as `serve` builds them and the sender is registered on the writer as
a listener; its transport is a fake that records transactions. The remote member is written
into the room's current state directly (this test is about the sending side; joins over
federation have tests of their own), so what is checked is the path from a client's message
to the PDU another server would get: the exact event the writer signed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from trioserver.events import Event
from trioserver.federation.sender import FederationSender
from trioserver.stores.federation_sender import FederationSenderStore

from tests.integration.writer_env import writer_env
from tests.unit.test_federation_sender import FakeTransport, settle

if TYPE_CHECKING:
    from pathlib import Path

    from trioserver.stores.database import Txn

REMOTE_USER = "@bob:remote.test"


def _plant_remote_member_txn(txn: Txn, room_id: str, user_id: str) -> None:
    txn.execute(
        "INSERT INTO current_state_events (room_id, type, state_key, event_id, membership,"
        " event_stream_ordering) VALUES (?, 'm.room.member', ?, '$planted', 'join', 0)",
        (room_id, user_id),
    )


async def test_a_message_goes_to_a_remote_members_server_as_the_signed_event(
    tmp_path: Path,
) -> None:
    async with writer_env(tmp_path) as env:
        alice = await env.user("alice")
        room_id = await env.create_room(alice)
        await env.db.run_txn("plant", _plant_remote_member_txn, room_id, REMOTE_USER)
        transport = FakeTransport()
        deps = env.components.deps
        sender = FederationSender(
            server_name=env.config.server_name,
            store=FederationSenderStore(env.db),
            events=deps.events,
            state=deps.state,
            transport=transport,
            flush_interval=0,
        )
        env.persister.add_listener(sender.on_persisted)
        async with trio.open_nursery() as nursery:
            await nursery.start(sender.run)
            stored = await env.send_text(alice, room_id, "hello")
            await settle(sender)
            nursery.cancel_scope.cancel()

    [call] = transport.calls
    assert call.destination == "remote.test"
    assert call.body["origin"] == env.config.server_name
    [pdu] = call.body["pdus"]
    # The PDU is the stored event itself: its id (the reference hash) comes out the same.
    assert Event.from_pdu(stored.event.room_version, pdu).event_id == stored.event_id
    assert env.config.server_name in pdu["signatures"]
    assert pdu["content"]["body"] == "hello"
    assert "unsigned" not in pdu
