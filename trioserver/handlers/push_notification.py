"""What a pusher POSTs to its push gateway (Push Gateway API ``POST /_matrix/push/v1/notify``).

Two shapes, as Synapse sends them: the full one (event type, sender, sender display name, room
name, content, membership for member events) and ``event_id_only``, which a pusher asks for
with ``data.format`` and which carries only the event and room ids, the counts and the
priority. A badge update after a read receipt is a notification without an event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from trioserver.stores.events import EventStore, StoredEvent
    from trioserver.stores.pushers import PusherRow
    from trioserver.stores.state import StateStore

JsonDict = dict[str, Any]

EVENT_ID_ONLY = "event_id_only"


def tweaks_for_actions(actions: list[Any]) -> dict[str, Any]:
    """The tweaks push rule actions set; a ``set_tweak`` without ``value`` sets True (spec
    "Push Rules: Actions", ``highlight``)."""
    tweaks: dict[str, Any] = {}
    for action in actions:
        if isinstance(action, dict) and isinstance(action.get("set_tweak"), str):
            tweaks[action["set_tweak"]] = action.get("value", True)
    return tweaks


def priority(event_type: str, tweaks: Mapping[str, Any]) -> str:
    """``high`` for what should wake a phone up: encrypted events (they may be anything),
    highlights and notifications with a sound (Synapse); ``low`` otherwise."""
    if event_type == "m.room.encrypted" or tweaks.get("highlight") or tweaks.get("sound"):
        return "high"
    return "low"


def device_entry(pusher: PusherRow, tweaks: Mapping[str, Any]) -> JsonDict:
    """The ``devices`` entry of a pusher: its data without the gateway's URL."""
    device: JsonDict = {
        "app_id": pusher.app_id,
        "pushkey": pusher.pushkey,
        "pushkey_ts": pusher.pushkey_ts // 1000,
        "data": {k: v for k, v in pusher.data.items() if k != "url"},
    }
    if tweaks:
        device["tweaks"] = dict(tweaks)
    return device


def badge_notification(pusher: PusherRow, badge: int) -> JsonDict:
    """A counts-only update, sent when a read receipt changed the badge (Synapse's shape)."""
    content: JsonDict = {"id": "", "type": None, "sender": "", "counts": {"unread": badge}}
    content["devices"] = [device_entry(pusher, {})]
    return {"notification": content}


def _display_name(member: StoredEvent | None, user_id: str) -> str:
    name = None if member is None else member.event.content.get("displayname")
    return name if isinstance(name, str) and name else user_id


def _room_name(name: StoredEvent | None, alias: StoredEvent | None) -> str | None:
    for stored, key in ((name, "name"), (alias, "alias")):
        value = None if stored is None else stored.event.content.get(key)
        if isinstance(value, str) and value:
            return value
    return None


class NotificationBuilder:
    """Builds the request bodies of pushers from stored events and the rooms' state."""

    def __init__(self, events: EventStore, state: StateStore, *, include_content: bool) -> None:
        self._events = events
        self._state = state
        self._include_content = include_content

    async def event_notification(
        self, pusher: PusherRow, stored: StoredEvent, actions: list[Any], badge: int
    ) -> JsonDict:
        """The body notifying the pusher's user of `stored`. Checkpoint: yes."""
        event = stored.event.redacted() if stored.redacted_by is not None else stored.event
        tweaks = tweaks_for_actions(actions)
        prio = priority(event.type, tweaks)
        if pusher.data.get("format") == EVENT_ID_ONLY:
            content: JsonDict = {
                "event_id": event.event_id,
                "room_id": event.room_id,
                "counts": {"unread": badge},
                "prio": prio,
            }
            # Synapse: the short format carries no tweaks either.
            content["devices"] = [device_entry(pusher, {})]
            return {"notification": content}
        content = {
            # "id" is the deprecated name of "event_id"; SyTest and old gateways read it.
            "id": event.event_id,
            "event_id": event.event_id,
            "room_id": event.room_id,
            "type": event.type,
            "sender": event.sender,
            "prio": prio,
            "counts": {"unread": badge},
        }
        if event.type == "m.room.member" and event.state_key is not None:
            content["membership"] = event.content.get("membership")
            content["user_is_target"] = event.state_key == pusher.user_id
        if self._include_content and event.content:
            content["content"] = dict(event.content)
        content.update(await self._context(event.room_id, event.sender, pusher.user_id))
        content["devices"] = [device_entry(pusher, tweaks)]
        return {"notification": content}

    async def _context(self, room_id: str, sender: str, user_id: str) -> JsonDict:
        # A few keys, not the whole state: this runs for every push of every pusher.
        keys = [
            ("m.room.name", ""),
            ("m.room.canonical_alias", ""),
            ("m.room.member", sender),
            ("m.room.member", user_id),
        ]
        entries = await self._state.current_state_entries(room_id, keys)
        wanted = [entries.get(key) for key in keys]
        found = await self._events.get_events(e for e in wanted if e is not None)
        name, alias, member, own = (None if e is None else found.get(e) for e in wanted)
        context: JsonDict = {"sender_display_name": _display_name(member, sender)}
        room_name = _room_name(name, alias)
        if room_name is None and (own is None or own.event.membership != "invite"):
            room_name = await self._members_name(await self._state.current_state(room_id), user_id)
        if room_name is not None:
            context["room_name"] = room_name
        return context

    async def _members_name(
        self, state: Mapping[tuple[str, str], str], user_id: str
    ) -> str | None:
        """Synapse's name of a room without a name or alias, from its other joined and invited
        members in the order they arrived: "A", "A and B", "A and 2 others". None for an
        invite (Synapse does not name a room from the invite alone) or with nobody else."""
        member_ids = [
            event_id
            for (event_type, state_key), event_id in state.items()
            if event_type == "m.room.member" and state_key != user_id
        ]
        events = (await self._events.get_events(member_ids)).values()
        others = sorted(
            (s for s in events if s.event.membership in ("join", "invite")),
            key=lambda s: s.event.origin_server_ts,
        )
        names = [_display_name(s, s.event.state_key or "") for s in others]
        if not names:
            return None
        if len(names) == 1:
            return names[0]
        if len(names) == 2:
            return f"{names[0]} and {names[1]}"
        return f"{names[0]} and {len(names) - 1} others"
