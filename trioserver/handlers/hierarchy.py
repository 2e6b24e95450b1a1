"""``GET /rooms/{roomId}/hierarchy``: walking a space tree (spec "Spaces", v1.2).

Theory of operation
-------------------
The walk is depth-first from the requested room over ``m.space.child`` state events with a
valid ``via`` (spec: "Paginates over the space tree in a depth-first manner"; Synapse keeps a
stack). Each room is visited once, however many spaces list it. A room is shown when the
requester may see its summary (`RoomSummaryHandler.accessible`); children of a room are only
followed when the room itself was shown and is above `max_depth`. Children this server is not
in are skipped: there is no federation to ask their ``via`` servers yet.

A page stops after `limit` rooms. What is left of the walk (the stack and the rooms already
visited) is kept in memory under a random ``next_batch`` token for a few minutes, as Synapse
keeps it in its database; the token is only valid for the same user, room, ``suggested_only``
and ``max_depth`` (spec: "max_depth and suggested_only cannot be changed from the first
request"). Tokens do not survive a restart; a client then gets 400 and starts again.
"""

from __future__ import annotations

import collections
import secrets
import time
from typing import TYPE_CHECKING, Any

import attrs

from trioserver.errors import MatrixError

if TYPE_CHECKING:
    from collections.abc import Callable

    from trioserver.handlers.room_summary import RoomInfo, RoomSummaryHandler

JsonDict = dict[str, Any]
# Synapse's defaults: at most 50 rooms per page, and paging sessions valid for 5 minutes.
MAX_LIMIT = 50
SESSION_SECONDS = 5 * 60
# Sessions kept at most (the oldest are dropped first).
MAX_SESSIONS = 1_000


@attrs.frozen
class HierarchyQuery:
    """A validated ``/hierarchy`` request."""

    room_id: str
    suggested_only: bool = False
    max_depth: int | None = None
    limit: int = MAX_LIMIT
    from_token: str | None = None


@attrs.frozen
class _Session:
    """The rest of a walk: the parameters it must be continued with and where it was."""

    user_id: str
    room_id: str
    suggested_only: bool
    max_depth: int | None
    # (room id, depth); the next room to visit is last.
    stack: tuple[tuple[str, int], ...]
    visited: frozenset[str]
    expires: float


class HierarchyHandler:
    """Pages through space trees."""

    def __init__(
        self, summaries: RoomSummaryHandler, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._summaries = summaries
        self._clock = clock
        self._sessions: collections.OrderedDict[str, _Session] = collections.OrderedDict()

    async def hierarchy(self, user_id: str, query: HierarchyQuery) -> JsonDict:
        """One page of the space tree under `query.room_id`.

        Raises:
            MatrixError: 403 when the user may not see the room (or the server is not in
                it), 400 for a paging token that is unknown, expired or from other
                parameters.
        """
        root = await self._summaries.load(query.room_id, user_id)
        if root is None or not await self._summaries.accessible(root, user_id):
            raise MatrixError(
                "M_FORBIDDEN",
                f"User {user_id} not in room {query.room_id}, and room previews are disabled",
            )
        if query.from_token is None:
            stack = [(query.room_id, 0)]
            visited: set[str] = set()
        else:
            session = self._take_session(query.from_token, user_id, query)
            stack, visited = list(session.stack), set(session.visited)
        rooms = await self._walk(user_id, query, root, stack, visited)
        response: JsonDict = {"rooms": rooms}
        # Rooms already visited would be skipped: only pending ones make a next page.
        if any(room_id not in visited for room_id, _ in stack):
            response["next_batch"] = self._save_session(user_id, query, stack, visited)
        return response

    async def _walk(
        self,
        user_id: str,
        query: HierarchyQuery,
        root: RoomInfo,
        stack: list[tuple[str, int]],
        visited: set[str],
    ) -> list[JsonDict]:
        # Pops rooms off `stack` (updating it and `visited`) until a page is full.
        rooms: list[JsonDict] = []
        while stack and len(rooms) < query.limit:
            room_id, depth = stack.pop()
            if room_id in visited:
                continue
            visited.add(room_id)
            info = (
                root if room_id == query.room_id else await self._summaries.load(room_id, user_id)
            )
            if info is None or not await self._summaries.accessible(info, user_id):
                continue
            children = info.children(suggested_only=query.suggested_only)
            entry = info.entry()
            # Synapse leaves allowed_room_ids out of /hierarchy (it is for federation).
            entry.pop("allowed_room_ids", None)
            entry["children_state"] = children
            rooms.append(entry)
            if query.max_depth is None or depth < query.max_depth:
                # Reversed, so that the first child is visited next.
                stack.extend((c["state_key"], depth + 1) for c in reversed(children))
        return rooms

    def _save_session(
        self,
        user_id: str,
        query: HierarchyQuery,
        stack: list[tuple[str, int]],
        visited: set[str],
    ) -> str:
        now = self._clock()
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if oldest.expires > now and len(self._sessions) < MAX_SESSIONS:
                break
            self._sessions.popitem(last=False)
        token = secrets.token_urlsafe(16)
        self._sessions[token] = _Session(
            user_id,
            query.room_id,
            query.suggested_only,
            query.max_depth,
            tuple(stack),
            frozenset(visited),
            now + SESSION_SECONDS,
        )
        return token

    def _take_session(self, token: str, user_id: str, query: HierarchyQuery) -> _Session:
        session = self._sessions.get(token)
        if (
            session is None
            or session.expires <= self._clock()
            or (session.user_id, session.room_id, session.suggested_only, session.max_depth)
            != (user_id, query.room_id, query.suggested_only, query.max_depth)
        ):
            raise MatrixError("M_INVALID_PARAM", "Unknown pagination token")
        # A token may be used again (a client retrying a page), until it expires.
        return session
