"""`Notifier.add_wake_listener`: every notify also calls the wake listeners, after the waiters."""

from __future__ import annotations

from trioserver.handlers.notifier import Notifier
from trioserver.streams import StreamPositions


def test_every_notify_calls_every_wake_listener_after_waking_waiters() -> None:
    notifier = Notifier(StreamPositions())
    seen: list[tuple[str, bool]] = []
    with notifier.listen("@u:blue", ["!r:blue"]) as listener:

        def first() -> None:
            # The waiter of the room is already woken when the callback runs.
            seen.append(("first", listener._news))

        notifier.add_wake_listener(first)
        notifier.add_wake_listener(lambda: seen.append(("second", listener._news)))
        notifier.notify(rooms=["!r:blue"])
        notifier.notify(users=["@other:blue"])
        notifier.notify()
    assert seen == [("first", True), ("second", True)] * 3
