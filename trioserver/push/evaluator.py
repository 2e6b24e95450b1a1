"""A stand-in for the ``pushrules`` branch's evaluator, with its contract: merging that branch
replaces this file. It knows only a few default rules (enough for the push actions tests)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

_NOTIFY: list[Any] = ["notify"]
_HIGHLIGHT: list[Any] = ["notify", {"set_tweak": "highlight"}]


@attrs.frozen
class PushContext:
    """What the rules' conditions need to know about the room."""

    room_member_count: int
    sender_power_level: int
    notification_levels: Mapping[str, int]


class CompiledPushRules:
    """One user's rules, ready to evaluate."""

    def actions_for(
        self,
        event: Mapping[str, Any],
        ctx: PushContext,
        *,
        user_id: str,
        display_name: str | None,
    ) -> list[Any]:
        """The actions for `event` ([] when it does not notify)."""
        content = event.get("content") or {}
        if event.get("type") == "m.room.member":
            invited = content.get("membership") == "invite" and event.get("state_key") == user_id
            return _HIGHLIGHT if invited else []
        if event.get("type") not in ("m.room.message", "m.room.encrypted", "m.sticker"):
            return []
        body = content.get("body")
        body = body if isinstance(body, str) else ""
        mentions = content.get("m.mentions")
        if isinstance(mentions, dict):
            users = mentions.get("user_ids")
            if isinstance(users, list) and user_id in users:
                return _HIGHLIGHT
            if mentions.get(
                "room"
            ) is True and ctx.sender_power_level >= ctx.notification_levels.get("room", 50):
                return _HIGHLIGHT
        if display_name and re.search(rf"(^|\W){re.escape(display_name)}($|\W)", body, re.I):
            return _HIGHLIGHT
        if content.get("msgtype") == "m.notice":
            return []
        return _NOTIFY


def is_notify(actions: list[Any]) -> bool:
    """Whether the actions notify."""
    return "notify" in actions


def is_highlight(actions: list[Any]) -> bool:
    """Whether the actions highlight."""
    return any(
        isinstance(a, dict) and a.get("set_tweak") == "highlight" and a.get("value", True)
        for a in actions
    )
