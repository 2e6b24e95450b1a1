"""``POST /search``: server-side search of room events (client-server API "Server Side Search").

Theory of operation
-------------------
What a user can find, as Synapse: events of the rooms they are joined to *now* (rooms they
left are not searched; the spec leaves this to the server), that the history visibility rules
let them see (`VisibilityFilter`), not sent by a user they ignore, not redacted (redactions
remove events from the index; the events table is checked too) and not served redacted because
their sender was erased (finding them by their text would reveal it).

A request reads the index (`SearchStore`) in batches, in the requested order, from the
position its ``next_batch`` names: each batch's events are checked by the filter and the
visibility rules, room by room, until a page of ``limit`` results is full, the index runs out,
or `MAX_EXAMINED` hits were examined (the client then pages on). ``next_batch`` is given when
the page is full or the scan stopped early, pointing just after the last hit examined, so pages
neither repeat nor skip results. For ``rank`` order the position is the hit's score: a page
after new messages changed the index's statistics may differ slightly (scores shift).

``count`` is the number of indexed matches in the searched rooms with the filter's senders and
types, before visibility rules (Synapse counts the same way, more loosely). ``highlights`` are
the words of the term and the words of the results that matched them (the stemmed forms found,
e.g. "running" for "run"), lower-cased.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import attrs

from trioserver.handlers.event_filter import RoomEventFilter
from trioserver.handlers.room_reads import page_token
from trioserver.handlers.search_query import ParsedTerm, parse_search_term
from trioserver.handlers.search_request import (
    BatchToken,
    EventContext,
    RoomEventsSearch,
    parse_batch_token,
    parse_search_body,
)
from trioserver.handlers.serialize import SerializeOptions
from trioserver.stores.events import RoomPosition, StoredEvent
from trioserver.stores.search import (
    HIGHLIGHT_END,
    HIGHLIGHT_START,
    SEARCH_KEYS,
    SearchCursor,
    SearchHit,
    SearchQuery,
)

if TYPE_CHECKING:
    from trioserver.handlers.auth import Requester
    from trioserver.handlers.room_reads import RoomReadHandler
    from trioserver.handlers.visibility import Viewer
    from trioserver.stores.events import EventStore
    from trioserver.stores.search import SearchStore
    from trioserver.stores.state import StateStore

JsonDict = dict[str, Any]
MEMBER = "m.room.member"
# Index hits examined per request at most (visible or not), so that a term matching much that
# the user may not see cannot make one request read the whole index.
MAX_EXAMINED = 2_000
MAX_SQL_SENDERS = 500
_HIGHLIGHTED = re.compile(re.escape(HIGHLIGHT_START) + "(.*?)" + re.escape(HIGHLIGHT_END), re.S)


@attrs.frozen
class Found:
    """A result: the hit, the event, and the requester's membership at it."""

    hit: SearchHit
    stored: StoredEvent
    membership: str


@attrs.frozen
class ResultPage:
    """One page of results, and where the next one starts (None: no more)."""

    results: list[Found]
    next_cursor: SearchCursor | None


class SearchHandler:
    """Searches the rooms a user is in."""

    def __init__(
        self,
        store: SearchStore,
        room_reads: RoomReadHandler,
        events: EventStore,
        state: StateStore,
    ) -> None:
        self._store = store
        self._room_reads = room_reads
        self._events = events
        self._state = state

    async def search(
        self, requester: Requester, body: JsonDict, next_batch: str | None
    ) -> JsonDict:
        """``POST /search`` with its JSON body and ``next_batch`` query parameter.

        Raises:
            MatrixError: 400 for a malformed body or a ``next_batch`` that is not ours.
        """
        request = parse_search_body(body)
        if request is None:
            return {"search_categories": {}}
        token = None if next_batch is None else parse_batch_token(next_batch, request.order_by)
        room_events = await self._room_events(requester, request, token)
        return {"search_categories": {"room_events": room_events}}

    async def _room_events(
        self, requester: Requester, request: RoomEventsSearch, token: BatchToken | None
    ) -> JsonDict:
        term = parse_search_term(request.search_term)
        query = await self._query(requester.user_id, request, term, token)
        if query is None:
            return {"results": [], "count": 0, "highlights": list(term.words)}
        viewers: dict[str, Viewer] = {}
        page = await self._page(requester.user_id, query, request, token, viewers)
        options = SerializeOptions(user_id=requester.user_id, device_id=requester.device_id)
        serialized = await self._room_reads.serializer.serialize(
            [f.stored for f in page.results],
            options,
            {f.stored.event_id: f.membership for f in page.results},
        )
        results = []
        for found, event in zip(page.results, serialized, strict=True):
            context: JsonDict = {}
            if request.event_context is not None:
                viewer = viewers[found.stored.room_id]
                context = await self._context(found.stored, viewer, request.event_context, options)
            results.append({"rank": -found.hit.score, "result": event, "context": context})
        body: JsonDict = {
            "results": results,
            "count": await self._store.count(query),
            "highlights": _highlights(term.words, page.results),
        }
        if request.include_state and page.results:
            body["state"] = await self._current_state(page.results, options)
        groups = _groups(request, page)
        if groups:
            body["groups"] = groups
        if page.next_cursor is not None:
            body["next_batch"] = _next_token(request, token, page.next_cursor).encode()
        return body

    async def _query(
        self,
        user_id: str,
        request: RoomEventsSearch,
        term: ParsedTerm,
        token: BatchToken | None,
    ) -> SearchQuery | None:
        match = term.match
        event_filter = request.event_filter
        joined = await self._room_reads.joined_rooms(user_id)
        rooms = [r for r in joined if event_filter.matches_room(r)]
        if token is not None and token.group == "room_id":
            rooms = [r for r in rooms if r == token.group_key]
        types = [
            SEARCH_KEYS[key][0]
            for key in request.keys
            if event_filter.matches_type(SEARCH_KEYS[key][0])
        ]
        if match is None or not rooms or not types:
            return None
        senders, not_senders = event_filter.senders, event_filter.not_senders
        # Long sender lists stay out of the SQL (SQLite bounds its parameters); the filter is
        # applied to every hit anyway, only `count` is then looser.
        return SearchQuery(
            match,
            tuple(sorted(rooms)),
            tuple(types),
            tsquery=term.tsquery or "",
            senders=senders if senders is None or len(senders) <= MAX_SQL_SENDERS else None,
            not_senders=not_senders if len(not_senders) <= MAX_SQL_SENDERS else (),
        )

    async def _page(
        self,
        user_id: str,
        query: SearchQuery,
        request: RoomEventsSearch,
        token: BatchToken | None,
        viewers: dict[str, Viewer],
    ) -> ResultPage:
        limit = request.limit
        cursor = None if token is None else token.cursor
        results: list[Found] = []
        examined = 0
        if limit == 0:
            return ResultPage([], None)
        while examined < MAX_EXAMINED:
            batch_size = min(max(2 * (limit - len(results)), 20), MAX_EXAMINED - examined)
            hits = await self._store.search(query, request.order_by, cursor, batch_size)
            visible = await self._visible(user_id, hits, request.event_filter, viewers)
            for hit in hits:
                cursor = hit.cursor
                examined += 1
                found = visible.get(hit.event_id)
                if found is not None:
                    results.append(Found(hit, found[0], found[1]))
                    if len(results) == limit:
                        # As Synapse: a full page always has a next_batch (maybe to nothing).
                        return ResultPage(results, cursor)
            if len(hits) < batch_size:
                return ResultPage(results, None)
        return ResultPage(results, cursor)

    async def _visible(
        self,
        user_id: str,
        hits: list[SearchHit],
        event_filter: RoomEventFilter,
        viewers: dict[str, Viewer],
    ) -> dict[str, tuple[StoredEvent, str]]:
        found = await self._events.get_events(h.event_id for h in hits)
        by_room: dict[str, list[StoredEvent]] = {}
        for hit in hits:
            stored = found.get(hit.event_id)
            if (
                stored is not None
                and stored.redacted_by is None
                and stored.rejected is None
                and event_filter.matches(stored.event)
            ):
                by_room.setdefault(stored.room_id, []).append(stored)
        visible: dict[str, tuple[StoredEvent, str]] = {}
        for room_id, candidates in by_room.items():
            if room_id not in viewers:
                viewers[room_id] = (await self._room_reads.access(user_id, room_id)).viewer
            viewer = viewers[room_id]
            for stored, membership in await self._room_reads.visibility.filter(candidates, viewer):
                # The filter serves an erased sender's events redacted: such an event must
                # not be found by the text it no longer shows.
                if stored.event is found[stored.event_id].event:
                    visible[stored.event_id] = (stored, membership)
        return visible

    async def _context(
        self,
        stored: StoredEvent,
        viewer: Viewer,
        wanted: EventContext,
        options: SerializeOptions,
    ) -> JsonDict:
        # As /context (`RoomReadHandler.get_context`): events before (newest first) and after,
        # each visible to the user, and tokens to paginate on from either end.
        here = RoomPosition(stored.topological_ordering, stored.stream_ordering)
        scan = self._room_reads.visibility.scan
        args: dict[str, Any] = {"event_filter": RoomEventFilter(), "viewer": viewer}
        before = await scan(
            stored.room_id, here, None, backwards=True, limit=wanted.before_limit, **args
        )
        after = await scan(
            stored.room_id, here, None, backwards=False, limit=wanted.after_limit, **args
        )
        serialize = self._room_reads.serializer.serialize
        around = [*before.events, *after.events]
        memberships = {s.event_id: m for s, m in around}
        context: JsonDict = {
            "events_before": await serialize([s for s, _ in before.events], options, memberships),
            "events_after": await serialize([s for s, _ in after.events], options, memberships),
            # The room tokens of /messages: backwards from `start`, forwards from `end`.
            "start": page_token(before.cursor, backwards=True),
            "end": page_token(after.cursor, backwards=False),
        }
        if wanted.include_profile:
            last = after.events[-1][0] if after.events else stored
            senders = {stored.event.sender, *(s.event.sender for s, _ in around)}
            context["profile_info"] = await self._profiles(last, senders)
        return context

    async def _profiles(self, last: StoredEvent, senders: set[str]) -> JsonDict:
        # Synapse: the senders' member events in the state at the last event of the context.
        group = last.state_group
        state = {} if group is None else await self._state.state_for_group(group)
        member_ids = [e for s in senders if (e := state.get((MEMBER, s))) is not None]
        members = await self._events.get_events(member_ids)
        profiles: JsonDict = {}
        for member in members.values():
            content = member.event.content
            name, avatar = content.get("displayname"), content.get("avatar_url")
            profiles[member.event.state_key or ""] = {
                "displayname": name if isinstance(name, str) else None,
                "avatar_url": avatar if isinstance(avatar, str) else None,
            }
        return profiles

    async def _current_state(
        self, results: list[Found], options: SerializeOptions
    ) -> dict[str, list[JsonDict]]:
        # Spec `include_state`: "the current state for every room returned in results".
        state: dict[str, list[JsonDict]] = {}
        for room_id in dict.fromkeys(f.stored.room_id for f in results):
            state_ids = await self._state.current_state(room_id)
            found = await self._events.get_events(state_ids.values())
            stored = [found[e] for e in state_ids.values() if e in found]
            state[room_id] = await self._room_reads.serializer.serialize(stored, options)
        return state


def _highlights(words: tuple[str, ...], results: list[Found]) -> list[str]:
    found = dict.fromkeys(words)
    for result in results:
        matched = _HIGHLIGHTED.findall(result.hit.highlighted)
        found.update(dict.fromkeys(w.lower() for w in matched))
    return list(found)


def _next_token(
    request: RoomEventsSearch, token: BatchToken | None, cursor: SearchCursor
) -> BatchToken:
    # A token from a group pages on within that group (Synapse does the same).
    if token is not None and token.group is not None:
        return BatchToken(request.order_by, cursor, token.group, token.group_key)
    return BatchToken(request.order_by, cursor)


def _groups(request: RoomEventsSearch, page: ResultPage) -> dict[str, dict[str, JsonDict]]:
    groups: dict[str, dict[str, JsonDict]] = {}
    for key in request.group_by:
        by_key: dict[str, JsonDict] = {}
        for found in page.results:
            value = found.stored.room_id if key == "room_id" else found.stored.event.sender
            # `order`: the rank of the group's first (best or newest) result.
            group = by_key.setdefault(value, {"results": [], "order": -found.hit.score})
            group["results"].append(found.stored.event_id)
        if key == "room_id" and page.next_cursor is not None:
            for room_id, group in by_key.items():
                paging = BatchToken(request.order_by, page.next_cursor, "room_id", room_id)
                group["next_batch"] = paging.encode()
        if by_key:
            groups[key] = by_key
    return groups
