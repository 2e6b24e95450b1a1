"""Global and per-room account data, including room tags (spec "Client Config", "Room
Tagging").

Every change takes the next position of the ``account_data`` stream and wakes the owner's
``/sync`` waiters (account data is only ever visible to its owner). Room tags are stored as the
room's ``m.tag`` account data, the form ``/sync`` delivers them in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trioserver.errors import MatrixError
from trioserver.events import is_valid_room_id
from trioserver.stores.account_data import (
    IGNORED_USER_LIST,
    TAG_TYPE,
    AccountDataStore,
    tags_of,
)
from trioserver.streams import StreamIdGenerator

if TYPE_CHECKING:
    from collections.abc import Sequence

    from trioserver.handlers.notifier import Notifier
    from trioserver.handlers.push_rules import PushRulesHandler
    from trioserver.stores.state import StateStore
    from trioserver.stores.stream_updates import AccountDataStreamRow
    from trioserver.streams import StreamPositions

JsonDict = dict[str, Any]
FULLY_READ = "m.fully_read"
PUSH_RULES = "m.push_rules"
# Spec "Client Config", server behaviour: types the server manages are refused with 405.
SERVER_MANAGED = (FULLY_READ, PUSH_RULES)
MAX_TAG_BYTES = 255


def _check_owner(requester: str, user_id: str) -> None:
    if requester != user_id:
        raise MatrixError("M_FORBIDDEN", "Cannot access account data for other users.")


def _check_room_id(room_id: str) -> None:
    if not is_valid_room_id(room_id):
        raise MatrixError("M_INVALID_PARAM", f"{room_id} is not a valid room ID")


def _check_settable(data_type: str) -> None:
    if data_type in SERVER_MANAGED:
        raise MatrixError("M_BAD_JSON", f"Cannot set {data_type} through this API.", status=405)


def _event(data_type: str, content: JsonDict) -> JsonDict:
    return {"type": data_type, "content": content}


class AccountDataHandler:
    """Global and per-room account data, including room tags."""

    def __init__(
        self,
        store: AccountDataStore,
        notifier: Notifier,
        positions: StreamPositions,
        state: StateStore,
        *,
        server_name: str,
        writer: bool = True,
    ) -> None:
        # False on a worker (issue 13): positions come from replication (`on_replicated`).
        self._writer = writer
        # The one AccountDataStore of the server: it caches ignore lists, which a second
        # instance would let go stale.
        self._store = store
        self._push_rules: PushRulesHandler | None = None
        self._notifier = notifier
        self._positions = positions
        self._state = state
        self._server_name = server_name
        self._ids = StreamIdGenerator(0)
        self._position = 0

    async def load(self) -> None:
        """Read the stream's position from the database and register it. Checkpoint: yes."""
        self._position = await self._store.max_stream_id()
        self._ids = StreamIdGenerator(self._position, writer=self._writer)
        self._positions.register("account_data", self.position)

    def position(self) -> int:
        """The account data stream's position: every change up to it is committed."""
        return self._position

    def serve_push_rules(self, push_rules: PushRulesHandler) -> None:
        """Deliver the user's push rules as global ``m.push_rules`` account data (spec "Push
        Rules: Events"; Synapse). Each change to them writes a marker row, which advances
        this stream and wakes the user's /sync; the content delivered is always the rules
        as they are then, never the marker's."""
        self._push_rules = push_rules
        push_rules.add_change_listener(self._push_rules_changed)

    # -- The HTTP API ----------------------------------------------------------------------

    async def get(
        self, requester: str, user_id: str, room_id: str | None, data_type: str
    ) -> JsonDict:
        """``GET /user/{userId}[/rooms/{roomId}]/account_data/{type}``.

        Raises:
            MatrixError: 403 for another user's data, 400 for a bad room id, 404 when unset.
        """
        _check_owner(requester, user_id)
        if room_id is not None:
            _check_room_id(room_id)
        elif data_type == PUSH_RULES and self._push_rules is not None:
            return await self._push_rules.rules_json(user_id)
        content = await self._store.get(user_id, room_id, data_type)
        if content is None:
            scope = "Account data" if room_id is None else "Room account data"
            raise MatrixError("M_NOT_FOUND", f"{scope} not found")
        return content

    async def put(
        self,
        requester: str,
        user_id: str,
        room_id: str | None,
        data_type: str,
        content: JsonDict,
    ) -> None:
        """``PUT /user/{userId}[/rooms/{roomId}]/account_data/{type}``.

        Raises:
            MatrixError: as `check_put`.
        """
        self.check_put(requester, user_id, room_id, data_type)
        await self.set_account_data(user_id, room_id, data_type, content)

    def check_put(self, requester: str, user_id: str, room_id: str | None, data_type: str) -> None:
        """Whether `requester` may set this entry (checked before the body is read).

        Raises:
            MatrixError: 403 for another user's data, 400 for a bad room id, 405 for a type
                the server manages (``m.fully_read``, ``m.push_rules``).
        """
        _check_owner(requester, user_id)
        if room_id is not None:
            _check_room_id(room_id)
        _check_settable(data_type)

    async def get_tags(self, requester: str, user_id: str, room_id: str) -> JsonDict:
        """``GET /user/{userId}/rooms/{roomId}/tags``: ``{"tags": {...}}``."""
        _check_owner(requester, user_id)
        _check_room_id(room_id)
        return {"tags": tags_of(await self._store.get(user_id, room_id, TAG_TYPE))}

    async def put_tag(
        self, requester: str, user_id: str, room_id: str, tag: str, content: JsonDict
    ) -> None:
        """``PUT /user/{userId}/rooms/{roomId}/tags/{tag}``.

        Raises:
            MatrixError: 403 for another user or a room the user never had a membership of;
                400 for a tag over 255 bytes or an ``order`` that is not a number.
        """
        _check_owner(requester, user_id)
        _check_room_id(room_id)
        if len(tag.encode()) > MAX_TAG_BYTES:
            raise MatrixError("M_INVALID_PARAM", "Tag names must not exceed 255 bytes")
        order = content.get("order")
        if order is not None and (isinstance(order, bool) or not isinstance(order, int | float)):
            raise MatrixError("M_INVALID_PARAM", "'order' must be a number")
        if "order" in content and order is None:
            # Spec "Room Tagging": `order` is a number or absent; a null would reach every
            # client in GET /tags and /sync, so it is dropped here.
            content = {k: v for k, v in content.items() if k != "order"}
        # Synapse: tagging a room the user has nothing to do with is refused.
        if await self._state.local_membership(user_id, room_id) is None:
            raise MatrixError("M_FORBIDDEN", f"User {user_id} has no membership in {room_id}")
        await self._change_tag(user_id, room_id, tag, content)

    async def delete_tag(self, requester: str, user_id: str, room_id: str, tag: str) -> None:
        """``DELETE /user/{userId}/rooms/{roomId}/tags/{tag}`` (absent tags are fine)."""
        _check_owner(requester, user_id)
        _check_room_id(room_id)
        await self._change_tag(user_id, room_id, tag, None)

    # -- For other handlers and /sync ------------------------------------------------------

    async def set_account_data(
        self, user_id: str, room_id: str | None, data_type: str, content: JsonDict
    ) -> None:
        """Set an entry without the API's checks (e.g. ``m.fully_read`` from read markers).

        Raises:
            NotStreamWriter: on an instance that does not write the account_data stream.

        Checkpoint: yes.
        """
        self._ids.check_writer("account_data")
        stream_id = await self._store.put(user_id, room_id, data_type, content, self._ids.next_id)
        self._advanced(stream_id, user_id)

    async def get_account_data(
        self, user_id: str, room_id: str | None, data_type: str
    ) -> JsonDict | None:
        """An entry's content (`room_id` None: global), or None. Checkpoint: yes."""
        return await self._store.get(user_id, room_id, data_type)

    async def ignored_users(self, user_id: str) -> frozenset[str]:
        """Whom the user ignores (``m.ignored_user_list``). Checkpoint: yes."""
        return await self._store.ignored_users(user_id)

    async def global_since(
        self, user_id: str, since: int | None, *, with_push_rules: bool = True
    ) -> list[JsonDict]:
        """Global account data events (``{"type", "content"}``) changed after `since`.

        Args:
            since: the client's account data position; None for all (initial sync).
            with_push_rules: include ``m.push_rules`` (in an initial sync, or after a change).
                The v1 views (/events, /initialSync) leave it out, as Synapse's do (SyTest
                44account_data.pl "Latest account data comes down in /initialSync").

        Checkpoint: yes.
        """
        rows = await self._store.global_since(user_id, since)
        events = [_event(row.type, row.content) for row in rows if row.type != PUSH_RULES]
        if (
            with_push_rules
            and self._push_rules is not None
            and (since is None or any(row.type == PUSH_RULES for row in rows))
        ):
            events.append(_event(PUSH_RULES, await self._push_rules.rules_json(user_id)))
        return events

    async def rooms_since(
        self, user_id: str, room_ids: Sequence[str], since: int | None
    ) -> dict[str, list[JsonDict]]:
        """Per-room account data events (tags as ``m.tag``) changed after `since`.

        Args:
            room_ids: the rooms to report on.
            since: the client's account data position; None for all (initial sync).

        Returns:
            Room id -> events, only for rooms with any.

        Checkpoint: yes.
        """
        result: dict[str, list[JsonDict]] = {}
        for row in await self._store.rooms_since(user_id, room_ids, since):
            assert row.room_id is not None
            result.setdefault(row.room_id, []).append(_event(row.type, row.content))
        return result

    async def _change_tag(
        self, user_id: str, room_id: str, tag: str, content: JsonDict | None
    ) -> None:
        self._ids.check_writer("account_data")
        stream_id = await self._store.change_tag(user_id, room_id, tag, content, self._ids.next_id)
        if stream_id is not None:
            self._advanced(stream_id, user_id)

    async def _push_rules_changed(self, user_id: str) -> None:
        # The marker's content is never delivered (see serve_push_rules).
        await self.set_account_data(user_id, None, PUSH_RULES, {})

    def on_replicated(self, token: int, rows: Sequence[AccountDataStreamRow]) -> None:
        """A follower applied the writer's changes up to `token`: forget cached ignore lists
        that changed, advance, and wake the owners (what `_advanced` does on the writer)."""
        for row in rows:
            if row.room_id is None and row.data_type == IGNORED_USER_LIST:
                self._store.forget_ignored_nowait(row.user_id)
            elif row.room_id is None and row.data_type == PUSH_RULES and self._push_rules:
                # The marker row may arrive before the caches stream's push_rules row, and
                # the /sync it wakes delivers the rules as they are now: drop them here too.
                self._push_rules.invalidate_nowait([row.user_id])
        self._position = max(self._position, token)
        self._notifier.notify(users={row.user_id for row in rows})

    def _advanced(self, stream_id: int, user_id: str) -> None:
        # Only now is the row committed: publishing the id any earlier could let a /sync
        # hand out a token that covers a row it cannot see yet.
        self._position = max(self._position, stream_id)
        self._notifier.notify(users=[user_id])
