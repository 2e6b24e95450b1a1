"""``GET /initialSync`` and ``GET /rooms/{roomId}/initialSync``: the deprecated (but specified)
v1 snapshots of everything, and of one room.

Both are views of machinery that already exists, not parallel logic: the global snapshot is an
initial ``/sync`` (`SyncHandler.snapshot`) reshaped into the v1 ``rooms`` list, and the room
snapshot reads the room through `RoomReadHandler` (the same access and history visibility rules
as ``/state`` and ``/messages``, so a user who is not joined may preview a ``world_readable``
room: spec "Room Previews"). Every ``end`` is a stream token, the ``from`` of ``GET /events``;
``messages.start`` pages back through ``/messages``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trioserver.handlers.account_data import PUSH_RULES
from trioserver.handlers.event_filter import FilterDefinition, RoomEventFilter, RoomFilter
from trioserver.handlers.legacy_events import client_v1, v1_presence
from trioserver.handlers.room_reads import MessagesQuery
from trioserver.handlers.serialize import SerializeOptions
from trioserver.handlers.sync import SyncRequest
from trioserver.stores.events import RoomPosition

if TYPE_CHECKING:
    from trioserver.handlers.auth import Requester
    from trioserver.handlers.notifier import Notifier
    from trioserver.handlers.room_reads import RoomReadHandler
    from trioserver.handlers.sync import SyncHandler
    from trioserver.handlers.sync_streams import StreamHandlers
    from trioserver.stores.directory import DirectoryStore
    from trioserver.stores.events import EventStore
    from trioserver.stores.sync import SyncMembership, SyncStore

JsonDict = dict[str, Any]
DEFAULT_LIMIT = 10


def _options(requester: Requester) -> SerializeOptions:
    return SerializeOptions(user_id=requester.user_id, device_id=requester.device_id)


def current_state(entry: JsonDict) -> list[JsonDict]:
    """A sync room entry's state at the end of its timeline: the state at the timeline's start
    with the timeline's state events applied."""
    state: dict[tuple[str, str], JsonDict] = {}
    for event in [*entry["state"]["events"], *entry["timeline"]["events"]]:
        if "state_key" in event:
            state[(event["type"], event["state_key"])] = event
    return list(state.values())


def _receipts(joined: JsonDict) -> list[JsonDict]:
    """The ``m.receipt`` events of the joined rooms of a sync, with their ``room_id`` (Synapse
    puts them at the top level of ``/initialSync``)."""
    return [
        {"type": "m.receipt", "room_id": room_id, "content": event["content"]}
        for room_id, entry in joined.items()
        for event in entry["ephemeral"]["events"]
        if event["type"] == "m.receipt"
    ]


class LegacyInitialSync:
    """Answers the two v1 initial sync endpoints."""

    def __init__(
        self,
        notifier: Notifier,
        sync: SyncHandler,
        sync_store: SyncStore,
        events: EventStore,
        directory: DirectoryStore,
        room_reads: RoomReadHandler,
        streams: StreamHandlers,
    ) -> None:
        self._notifier = notifier
        self._sync = sync
        self._sync_store = sync_store
        self._events = events
        self._directory = directory
        self._room_reads = room_reads
        self._h = streams

    async def initial_sync(self, requester: Requester, *, limit: int, archived: bool) -> JsonDict:
        """``GET /initialSync``: every room of the user with its state and latest messages."""
        room_filter = RoomFilter(include_leave=archived, timeline=RoomEventFilter(limit=limit))
        body = await self._sync.snapshot(
            SyncRequest(
                user_id=requester.user_id,
                device_id=requester.device_id,
                since=None,
                timeout_ms=0,
                full_state=False,
                filter=FilterDefinition(room=room_filter),
                options=_options(requester),
            )
        )
        end: str = body["next_batch"]
        rooms = []
        for row in await self._sync_store.memberships(requester.user_id):
            room = await self._room_info(requester, row, body["rooms"], end)
            if room is not None:
                rooms.append(room)
        return {
            "end": end,
            "rooms": rooms,
            "presence": [v1_presence(e) for e in body["presence"]["events"]],
            # Synapse's /initialSync has no m.push_rules (SyTest 44account_data.pl).
            "account_data": [e for e in body["account_data"]["events"] if e["type"] != PUSH_RULES],
            "receipts": _receipts(body["rooms"]["join"]),
        }

    async def _room_info(
        self, requester: Requester, row: SyncMembership, sections: JsonDict, end: str
    ) -> JsonDict | None:
        info: JsonDict = {"room_id": row.room_id, "membership": row.membership}
        if row.membership == "invite":
            stored = await self._events.get_event(row.event_id)
            if stored is None:
                return None
            serializer = self._room_reads.serializer
            (invite,) = await serializer.serialize([stored], _options(requester))
            info["invite"] = client_v1(invite)
            return info
        section = "join" if row.membership == "join" else "leave"
        entry = sections[section].get(row.room_id) if section in sections else None
        if entry is None:
            return None  # a knock, or a room left when `archived` was not asked for
        info["messages"] = {
            "chunk": [client_v1(e) for e in entry["timeline"]["events"]],
            "start": await self._start(entry["timeline"]),
            "end": end,
        }
        info["state"] = [client_v1(e) for e in current_state(entry)]
        info["account_data"] = entry["account_data"]["events"]
        info["visibility"] = await self._visibility(row.room_id)
        return info

    async def _start(self, timeline: JsonDict) -> str:
        """Just before the oldest message given, as Synapse's v1 ``start``: a ``/sync``
        ``prev_batch`` is the timeline's end when the timeline holds the whole history."""
        events = timeline["events"]
        stored = await self._events.get_event(events[0]["event_id"]) if events else None
        if stored is None:
            return str(timeline["prev_batch"])
        return RoomPosition(stored.topological_ordering, stored.stream_ordering - 1).to_token()

    async def _visibility(self, room_id: str) -> str:
        return "public" if await self._directory.is_public(room_id) else "private"

    async def room_initial_sync(self, requester: Requester, room_id: str, limit: int) -> JsonDict:
        """``GET /rooms/{roomId}/initialSync``: the room's state and latest messages.

        Raises:
            MatrixError: 403 when the user may not read the room.
        """
        end = self._notifier.current_token().to_string()
        reads = self._room_reads
        access = await reads.access(requester.user_id, room_id)
        access.check_reader()
        state = [client_v1(e) for e in await reads.get_state(requester, room_id)]
        page = await reads.get_messages(
            requester, room_id, MessagesQuery(backwards=True, limit=limit)
        )
        # Spec: `start` pages back to earlier events; with none left, a token before them all.
        start = page.get("end", RoomPosition(0, 0).to_token())
        info: JsonDict = {
            "room_id": room_id,
            "messages": {
                "chunk": [client_v1(e) for e in reversed(page["chunk"])],
                "start": start,
                "end": end,
            },
            "state": state,
            "presence": await self._presence(state, access.membership),
            "receipts": await self._receipts(requester.user_id, room_id, access.membership),
            "account_data": await self._account_data(requester.user_id, room_id),
            "visibility": await self._visibility(room_id),
        }
        if access.membership is not None:
            info["membership"] = access.membership
        return info

    async def _presence(self, state: list[JsonDict], membership: str | None) -> list[JsonDict]:
        if membership in ("leave", "ban"):
            return []  # a departed user sees the room as it was, not who is online now
        joined = [
            e["state_key"]
            for e in state
            if e["type"] == "m.room.member" and e["content"].get("membership") == "join"
        ]
        return [v1_presence(e) for e in self._h.presence.presence_for_users(joined)]

    async def _receipts(
        self, user_id: str, room_id: str, membership: str | None
    ) -> list[JsonDict]:
        if membership != "join":
            return []
        receipts = await self._h.receipts.receipts_for_rooms(user_id, [room_id], None)
        content = receipts.get(room_id)
        return (
            []
            if content is None
            else [{"type": "m.receipt", "room_id": room_id, "content": content}]
        )

    async def _account_data(self, user_id: str, room_id: str) -> list[JsonDict]:
        data = await self._h.account_data.rooms_since(user_id, [room_id], None)
        return data.get(room_id, [])
