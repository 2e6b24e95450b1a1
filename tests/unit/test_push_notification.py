"""The pure parts of a pusher's notification: tweaks, priority and the devices entry."""

from __future__ import annotations

from typing import Any

import pytest

from trioserver.handlers.push_notification import (
    badge_notification,
    device_entry,
    priority,
    tweaks_for_actions,
)
from trioserver.stores.pushers import PusherRow


def _pusher(**data: Any) -> PusherRow:
    return PusherRow(
        id=1,
        user_id="@alice:localhost",
        device_id="PHONE",
        kind="http",
        app_id="app",
        app_display_name="App",
        device_display_name="Phone",
        pushkey="key",
        pushkey_ts=1_700_000_123_456,
        lang="en",
        data={"url": "https://gw.example/_matrix/push/v1/notify", **data},
        profile_tag="",
        last_stream_ordering=0,
    )


def test_tweaks_come_from_set_tweak_actions() -> None:
    actions = [
        "notify",
        {"set_tweak": "sound", "value": "default"},
        {"set_tweak": "highlight"},  # no value: true (spec)
        {"set_tweak": 3},
        "dont_notify",
    ]
    assert tweaks_for_actions(actions) == {"sound": "default", "highlight": True}
    assert tweaks_for_actions(["notify"]) == {}


@pytest.mark.parametrize(
    ("event_type", "tweaks", "expected"),
    [
        ("m.room.message", {}, "low"),
        ("m.room.message", {"highlight": False}, "low"),
        ("m.room.message", {"highlight": True}, "high"),
        ("m.room.message", {"sound": "default"}, "high"),
        ("m.room.encrypted", {}, "high"),
    ],
)
def test_priority(event_type: str, tweaks: dict[str, Any], expected: str) -> None:
    assert priority(event_type, tweaks) == expected


def test_the_device_entry_leaves_out_the_url_and_counts_seconds() -> None:
    pusher = _pusher(format="event_id_only", brand="x")
    assert device_entry(pusher, {}) == {
        "app_id": "app",
        "pushkey": "key",
        "pushkey_ts": 1_700_000_123,
        "data": {"format": "event_id_only", "brand": "x"},
    }
    assert device_entry(pusher, {"sound": "ping"})["tweaks"] == {"sound": "ping"}


def test_a_badge_update_has_no_event() -> None:
    body = badge_notification(_pusher(), 3)["notification"]
    assert (body["id"], body["type"], body["sender"]) == ("", None, "")
    assert body["counts"] == {"unread": 3}
    assert "tweaks" not in body["devices"][0]
