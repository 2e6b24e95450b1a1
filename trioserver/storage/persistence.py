"""The event persistence controller: the one path by which events are created and stored.

Theory of operation
-------------------
Handlers describe the events they want (`EventIntent`: type, sender, content, state key) and
`submit` them; they never build or store events themselves. `submit` puts the request on a
memory channel and waits. One task, `run`, reads the channel: it takes up to `MAX_BATCH` events
of waiting requests, builds each event on the writer's in-memory view of its room (so every
event's ``prev_events``, ``auth_events`` and ``depth`` follow from the events before it, with no
forks), authorises it with the room version's rules, signs it, and then stores the whole batch
in one transaction (`PersistEventStore`). Only after COMMIT are the waiting requests answered:
an acknowledged event is durable. Requests are handled in arrival order, so events of one room
keep their order; a request that fails its checks is answered with the error and leaves the
room unchanged, without affecting the others in the batch.

This class and its task exist only on the events writer (seed 2); other instances will hand
their requests to the writer over HTTP.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

import trio

from trioserver.errors import MatrixError
from trioserver.events import (
    KNOWN_ROOM_VERSIONS,
    AuthError,
    Event,
    EventTooLargeError,
    InvalidEventError,
    RoomVersion,
    auth_types_for_event,
    build_event,
    check_auth_rules,
    check_client_redaction,
    compute_reference_hash,
    should_apply_redaction,
)
from trioserver.storage.expiry import expiry_ts_of
from trioserver.storage.intents import EventIntent, NewRoom, TxnKey, random_room_id
from trioserver.storage.live_room import LiveRoom, RoomView, load_room_head_txn
from trioserver.storage.received_events import (
    KnownEvent,
    PlacedEvent,
    PlacementContext,
    ReceivedEvent,
    ReceivedEventPlacer,
    stored_as_known,
)
from trioserver.stores.events import EventStore, StoredEvent
from trioserver.stores.persist_events import (
    MAX_STATE_CHAIN,
    EventWrite,
    NewStateGroup,
    PersistEventStore,
    RoomWrite,
    StateChange,
    state_change_for,
)

if TYPE_CHECKING:
    from trioserver.storage.push_evaluation import PushEvaluator
    from trioserver.storage.relation_checks import RelationChecker
    from trioserver.stores.database import Database
    from trioserver.stores.state import StateStore

logger = logging.getLogger(__name__)

MAX_BATCH = 100
CREATE_KEY = ("m.room.create", "")

PersistListener = Callable[[Sequence[StoredEvent]], None]


@attrs.define(eq=False)
class _Request:
    room_id: str | None
    intents: list[EventIntent]
    new_room: NewRoom | None
    on_left_room: bool = False
    # Issue 15: events from other servers, to judge and place (`storage.received_events`),
    # in a room of this version (which this server may not have heard of yet).
    received: list[ReceivedEvent] | None = None
    room_version: RoomVersion | None = None
    # Set when the received events are the first this server stores of their room.
    creates_room: bool = False
    # Issue 15: build and authorise only, storing nothing (`build_only`).
    dry_run: bool = False
    built_events: list[Event] = attrs.field(factory=list)
    done: trio.Event = attrs.field(factory=trio.Event)
    result: list[StoredEvent] = attrs.field(factory=list)
    error: BaseException | None = None

    def finish(self, error: BaseException | None = None) -> None:
        self.error = error
        self.done.set()


@attrs.define
class _Built:
    """An event built and authorised, not yet placed in the batch."""

    event: Event
    state_group: int | None
    replaces_state: str | None
    new_group: NewStateGroup | None
    txn_key: TxnKey | None
    expiry_ts: int | None
    applies_redaction_to: str | None
    # Received events (issue 15): kept out of the timeline, and why it was rejected.
    outlier: bool = False
    rejected: str | None = None
    out_of_band: bool = False
    backfilled: bool = False
    # A backfilled event this server held as an outlier: it joins the timeline in place.
    promote: bool = False


@attrs.define
class _RoomBatch:
    """What one batch changes about one room."""

    room: LiveRoom
    min_stream: int
    changes: dict[tuple[str, str], StateChange] = attrs.field(factory=dict)
    out_of_band: list[StateChange] = attrs.field(factory=list)
    promoted: list[tuple[str, int]] = attrs.field(factory=list)
    new_groups: list[NewStateGroup] = attrs.field(factory=list)
    new_room_version: str | None = None
    creator: str | None = None
    created_ts: int = 0


def _persist_failed() -> MatrixError:
    return MatrixError("M_UNKNOWN", "Failed to persist event", status=500)


class EventPersister:
    """Builds, authorises, signs and stores events; the events writer's controller."""

    def __init__(
        self,
        store: PersistEventStore,
        events: EventStore,
        db: Database,
        *,
        server_name: str,
        signing_key: Any,
        ephemeral_messages: bool,
        state_groups: StateStore,
        clock: Callable[[], float] = time.time,
        max_cached_rooms: int = 1_000,
        relation_checks: RelationChecker | None = None,
        push: PushEvaluator | None = None,
    ) -> None:
        self._store = store
        self._events = events
        self._state_groups = state_groups
        self._db = db
        self._server_name = server_name
        self._server_suffix = ":" + server_name
        self._signing_key = signing_key
        self._ephemeral = ephemeral_messages
        self._clock = clock
        self._rooms: collections.OrderedDict[str, LiveRoom] = collections.OrderedDict()
        self._max_rooms = max_cached_rooms
        self._send, self._receive = trio.open_memory_channel[_Request](10_000)
        self._listeners: list[PersistListener] = []
        self._next_stream = 0
        self._next_backfill_stream = 0
        self._next_group = 0
        self.stream_position = 0
        self._relation_checks = relation_checks
        self._push = push
        # Events and state groups of the batch being built, which later requests of the same
        # batch may refer to before they are committed (received events, issue 15).
        self._batch_known: dict[str, KnownEvent] = {}
        self._batch_groups: dict[int, NewStateGroup] = {}

    def add_listener(self, listener: PersistListener) -> None:
        """Call `listener` with each committed batch of events (in stream order)."""
        self._listeners.append(listener)

    async def submit(
        self,
        room_id: str | None,
        intents: list[EventIntent],
        new_room: NewRoom | None = None,
        *,
        on_left_room: bool = False,
    ) -> list[StoredEvent]:
        """Build, authorise and store events; return them once committed.

        Args:
            room_id: the room, or None when `new_room` is given and the room id comes from
                the create event (room version 12).
            intents: the events, in order; all are stored or none.
            new_room: set when the first intent creates the room.
            on_left_room: the server may have left the room (seed 4 dropped its current
                state): build on the state at the room's head (its latest state group)
                instead, as rejecting an invite needs. The state is dropped again after.

        Raises:
            MatrixError: 403 when an event fails the authorization rules, 400/413 for an
                invalid event, 404 for an unknown room.

        Checkpoint: yes. If the caller is cancelled after submitting, the events may still be
        stored.
        """
        request = _Request(room_id, intents, new_room, on_left_room)
        await self._send.send(request)
        await request.done.wait()
        if request.error is not None:
            raise request.error
        return request.result

    async def submit_received(
        self, room_id: str, room_version: RoomVersion, events: list[ReceivedEvent]
    ) -> list[StoredEvent]:
        """Judge and store events received from other servers (issue 15), in order.

        Events already stored are skipped. Each is stored even when rejected or soft-failed
        (`storage.received_events`); the returned events say which (``rejected``), and a
        timeline event is one with a state group that is not rejected.

        Checkpoint: yes.
        """
        request = _Request(room_id, [], None, received=events, room_version=room_version)
        await self._send.send(request)
        await request.done.wait()
        if request.error is not None:
            raise request.error
        return request.result

    async def build_only(self, room_id: str, intents: list[EventIntent]) -> list[Event]:
        """Build, authorise and sign events on the room's head, storing nothing: an invite
        that the invitee's server must countersign before it is stored (issue 15).

        Raises:
            MatrixError: as `submit`.

        Checkpoint: yes.
        """
        request = _Request(room_id, intents, None, dry_run=True)
        await self._send.send(request)
        await request.done.wait()
        if request.error is not None:
            raise request.error
        return request.built_events

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer task: batch, build and persist submitted events until cancelled.

        Safe to restart after an unexpected failure (`trioserver.supervisor`): it starts from
        what is committed. Stream and state-group ids are read again and the in-memory room
        heads are dropped, so no event is built on a head the failure left half-updated (heads
        change before COMMIT). Requests still queued keep their order; the unanswered ones of
        the failed batch are answered 500 (none of them was acknowledged), so no acknowledged
        write is lost or reordered.
        """
        self._rooms.clear()
        self._next_stream, self._next_group = await self._store.max_ids()
        self._next_backfill_stream = min(0, await self._store.min_stream_ordering())
        self.stream_position = max(self.stream_position, self._next_stream)
        task_status.started()
        while True:
            batch = [await self._receive.receive()]
            size = len(batch[0].intents)
            while size < MAX_BATCH:
                try:
                    request = self._receive.receive_nowait()
                except trio.WouldBlock:
                    break
                batch.append(request)
                size += len(request.intents)
            try:
                await self._process(batch)
            except BaseException:
                # A bug (or shutdown) cut the batch short: nobody may wait for an answer
                # that will never come. The supervisor logs the error and restarts us.
                for request in batch:
                    if not request.done.is_set():
                        request.finish(_persist_failed())
                raise

    async def _process(self, batch: list[_Request]) -> None:
        writes: list[EventWrite] = []
        rooms: dict[str, _RoomBatch] = {}
        accepted: list[_Request] = []
        now_ms = int(self._clock() * 1000)
        self._batch_known.clear()
        self._batch_groups.clear()
        if self._relation_checks is not None:
            self._relation_checks.start_batch()
        for request in batch:
            try:
                built, room = await self._build_request(request, now_ms)
            except MatrixError as err:
                request.finish(err)
                continue
            except Exception:  # boundary: one request's bug fails that request alone
                logger.exception("building events for room %s failed", request.room_id)
                request.finish(_persist_failed())
                continue
            if request.dry_run:
                # The view is dropped uncommitted: the room is as if it was never built.
                request.built_events = [item.event for item in built]
                request.finish()
                continue
            start = len(writes)
            self._add_to_batch(request, built, room, rooms, writes, now_ms)
            accepted.append(request)
            await self._evaluate_push(room.room, writes, start)
        room_writes = [self._room_write(rb) for rb in rooms.values()]
        if not writes and not any(r.promoted for r in room_writes):
            return
        try:
            await self._store.persist_batch(writes, room_writes)
        except Exception as exc:  # boundary: the batch's waiters get the error, the loop goes on
            # A database that is unreachable (stores.postgres.DatabaseUnavailable, 503) is
            # said as such; anything else is a bug, answered 500.
            failure = exc if isinstance(exc, MatrixError) else _persist_failed()
            if isinstance(exc, MatrixError):
                logger.error("persisting a batch of %d events failed: %s", len(writes), exc)
            else:
                logger.exception("persisting a batch of %d events failed", len(writes))
            for room_id in rooms:
                self._rooms.pop(room_id, None)  # reload from the database next time
            for request in accepted:
                request.finish(failure)
            return
        promoted = [event_id for r in room_writes for event_id, _group in r.promoted]
        self._after_commit(writes, accepted, promoted)

    async def _evaluate_push(self, room: LiveRoom, writes: list[EventWrite], start: int) -> None:
        """Attach push actions to the events a request added (from `start`), evaluated on the
        room's state after the request (issue 11; `storage.push_evaluation`)."""
        if self._push is None:
            return

        def in_batch(event_id: str) -> Event | None:
            # Only relations look here (for their parent): a scan of the batch is fine.
            return next((w.stored.event for w in writes if w.stored.event_id == event_id), None)

        for i in range(start, len(writes)):
            write = writes[i]
            if write.outlier or write.stored.stream_ordering < 0:
                continue  # outside the timeline, or history: nobody is notified
            try:
                push = await self._push.evaluate(room, write.stored.event, in_batch)
            except Exception:  # boundary: a push rule bug must not lose the message; it is
                # stored without notifying anyone.
                logger.exception("evaluating push rules for %s failed", write.stored.event_id)
                continue
            if push is not None:
                writes[i] = attrs.evolve(write, push=push)

    def _after_commit(
        self, writes: list[EventWrite], accepted: list[_Request], promoted: list[str]
    ) -> None:
        stored = [w.stored for w in writes]
        for item in stored:
            self._events.cache.put(item)
        self._events.cache.invalidate(
            w.applies_redaction_to for w in writes if w.applies_redaction_to is not None
        )
        self._events.cache.invalidate(promoted)  # cached as outliers until now
        if stored:
            self.stream_position = max(self.stream_position, stored[-1].stream_ordering)
        for request in accepted:
            request.finish()
        # Outliers (received events outside the timeline) are nobody's news.
        timeline = [
            w.stored
            for w in writes
            if (not w.outlier or w.out_of_band) and w.stored.stream_ordering > 0
        ]
        if not timeline:
            return
        for listener in self._listeners:
            try:
                listener(timeline)
            except Exception:  # boundary: the events are committed; the other listeners
                # (the /sync notifier among them) must still hear of them.
                logger.exception("persist listener %r failed", listener)

    def _add_to_batch(
        self,
        request: _Request,
        built: list[_Built],
        view: RoomView,
        rooms: dict[str, _RoomBatch],
        writes: list[EventWrite],
        now_ms: int,
    ) -> None:
        received_changes = _changed_state(view) if request.received is not None else None
        view.commit()
        room = view.room
        room_batch = rooms.get(room.room_id)
        if room_batch is None:
            room_batch = _RoomBatch(room, min_stream=self._next_stream + 1)
            rooms[room.room_id] = room_batch
        if request.new_room is not None:
            room_batch.new_room_version = room.room_version.identifier
            room_batch.creator = request.intents[0].sender
            room_batch.created_ts = now_ms
            self._cache_room(room)
        elif request.creates_room:
            room_batch.new_room_version = room.room_version.identifier
            room_batch.creator = next(
                (b.event.sender for b in built if b.event.is_create_event()), None
            )
            room_batch.created_ts = now_ms
            self._cache_room(room)
        streams: dict[str, int] = {}
        for item in built:
            if item.promote:
                # Already stored (as an outlier): only its place in the timeline changes.
                assert item.state_group is not None
                if item.new_group is not None:
                    room_batch.new_groups.append(item.new_group)
                    self._batch_groups[item.new_group.id] = item.new_group
                room_batch.promoted.append((item.event.event_id, item.state_group))
                continue
            if item.backfilled:
                # History: below every live event, so that no stream presents it as new.
                self._next_backfill_stream -= 1
                stream_ordering = self._next_backfill_stream
            else:
                self._next_stream += 1
                stream_ordering = self._next_stream
            stored = StoredEvent(
                event=item.event,
                stream_ordering=stream_ordering,
                topological_ordering=item.event.depth,
                state_group=item.state_group,
                replaces_state=item.replaces_state,
                redacted_by=None,
                rejected=item.rejected,
            )
            writes.append(
                EventWrite(
                    stored,
                    received_ts=now_ms,
                    new_state_group=item.new_group,
                    txn_key=item.txn_key,
                    expiry_ts=item.expiry_ts,
                    applies_redaction_to=item.applies_redaction_to,
                    outlier=item.outlier,
                    out_of_band=item.out_of_band,
                )
            )
            if item.out_of_band:
                room_batch.out_of_band.append(state_change_for(item.event, self._next_stream))
            streams[item.event.event_id] = stream_ordering
            self._batch_known[item.event.event_id] = KnownEvent(
                item.event, item.state_group, item.rejected, item.outlier
            )
            if item.new_group is not None:
                self._batch_groups[item.new_group.id] = item.new_group
            if received_changes is None and item.event.state_key is not None:
                change = state_change_for(item.event, stream_ordering)
                room_batch.changes[(change.type, change.state_key)] = change
            request.result.append(stored)
        for key, event in (received_changes or {}).items():
            stream = streams.get(event.event_id, self._next_stream)
            room_batch.changes[key] = state_change_for(event, stream)

    def _room_write(self, room_batch: _RoomBatch) -> RoomWrite:
        room = room_batch.room
        server_left = False
        local_member_changed = any(
            t == "m.room.member" and k.endswith(self._server_suffix) and c.membership != "join"
            for (t, k), c in room_batch.changes.items()
        )
        # Seed 4: only a local member leaving (or being kicked/banned) can make us leave.
        if local_member_changed and not room.local_user_joined(self._server_suffix):
            server_left = True
            room.state.clear()
        return RoomWrite(
            room_id=room.room_id,
            extremities=tuple(e.event_id for e in room.extremities),
            state_changes=tuple(room_batch.changes.values()),
            min_stream_ordering=room_batch.min_stream,
            new_room_version=room_batch.new_room_version,
            creator=room_batch.creator,
            created_ts=room_batch.created_ts,
            server_left=server_left,
            out_of_band=tuple(room_batch.out_of_band),
            promoted=tuple(room_batch.promoted),
            new_groups=tuple(room_batch.new_groups),
        )

    async def _build_request(
        self, request: _Request, now_ms: int
    ) -> tuple[list[_Built], RoomView]:
        if request.received is not None:
            return await self._build_received(request)
        if request.new_room is not None:
            view = self._new_room_view(request)
        else:
            assert request.room_id is not None
            room = await self._live_room(request.room_id)
            if room is None:
                raise MatrixError("M_NOT_FOUND", "Unknown room")
            if request.on_left_room and not room.state:
                return await self._build_on_head_state(request, room, now_ms)
            view = RoomView.of(room)
        built = []
        intents = request.intents
        if request.new_room is not None and view.room.room_id == "":
            view, create = await self._build_unique_create(request, now_ms)
            built.append(create)
            intents = intents[1:]
        for intent in intents:
            built.append(await self._build_one(view, intent, now_ms))
        return built, view

    async def _build_received(self, request: _Request) -> tuple[list[_Built], RoomView]:
        assert request.room_id is not None
        assert request.room_version is not None
        assert request.received is not None
        room = await self._live_room(request.room_id)
        if room is None:
            room = LiveRoom(request.room_id, request.room_version, {}, [], 0, None, 0)
            request.creates_room = True
        view = RoomView.of(room)
        context = PlacementContext(
            lookup=self._known_events,
            state_of_group=self._state_of_group,
            next_group_id=self._allocate_group,
            max_chain=MAX_STATE_CHAIN,
            outliers=self._outlier_ids,
        )
        placer = ReceivedEventPlacer(context, view)
        already = await self._known_events([r.event.event_id for r in request.received])
        built = []
        for received in request.received:
            known = already.get(received.event.event_id)
            if known is not None and not _promotable(received, known):
                continue
            already[received.event.event_id] = KnownEvent(received.event, None, None, True)
            built.append(self._built_from(room.room_id, await placer.place(received)))
            built[-1].promote = known is not None
        return built, view

    def _built_from(self, room_id: str, placed: PlacedEvent) -> _Built:
        new_group = None
        if placed.new_group is not None:
            group_id, prev, chain, entries = placed.new_group
            new_group = NewStateGroup(group_id, room_id, prev, chain, entries)
        return _Built(
            event=placed.event,
            state_group=placed.state_group,
            replaces_state=placed.replaces_state,
            new_group=new_group,
            txn_key=None,
            expiry_ts=None,
            applies_redaction_to=placed.applies_redaction_to,
            outlier=placed.outlier,
            rejected=placed.rejected,
            out_of_band=placed.out_of_band,
            backfilled=placed.backfilled,
        )

    async def _known_events(self, event_ids: Sequence[str]) -> dict[str, KnownEvent]:
        """Events stored or placed earlier in this batch, by id."""
        found = {e: self._batch_known[e] for e in event_ids if e in self._batch_known}
        missing = [e for e in event_ids if e not in found]
        if missing:
            stored = await self._events.get_events(missing)
            found.update({e: stored_as_known(s, outlier=False) for e, s in stored.items()})
        return found

    async def _outlier_ids(self, event_ids: Sequence[str]) -> set[str]:
        """Those of the events kept outside the timeline, in this batch or stored."""
        found = {e for e in event_ids if e in self._batch_known and self._batch_known[e].outlier}
        stored = [e for e in event_ids if e not in self._batch_known]
        return found | await self._events.outlier_ids(stored)

    async def _state_of_group(self, group: int) -> dict[tuple[str, str], str]:
        """A state group's full state, also for groups of this uncommitted batch."""
        new = self._batch_groups.get(group)
        if new is None:
            return dict(await self._state_groups.state_for_group(group))
        base = {} if new.prev_group is None else await self._state_of_group(new.prev_group)
        base.update(new.entries)
        return base

    def _allocate_group(self) -> int:
        self._next_group += 1
        return self._next_group

    async def _build_on_head_state(
        self, request: _Request, room: LiveRoom, now_ms: int
    ) -> tuple[list[_Built], RoomView]:
        # Seed 4 dropped the room's current state when the last local member left, but its
        # forward extremities and their state group remain: that state is what the next
        # event (an invitee's leave) builds on and is authorised against. `_room_write` drops
        # it again, as no local user is joined; a failed build (of any kind: the writer's
        # per-request boundary goes on with the room cached) drops it here.
        if room.state_group is None:
            raise MatrixError("M_FORBIDDEN", "This server is not in the room")
        state_ids = await self._state_groups.state_for_group(room.state_group)
        found = await self._events.get_events(state_ids.values())
        room.state.update({k: found[e].event for k, e in state_ids.items() if e in found})
        view = RoomView.of(room)
        try:
            built = [await self._build_one(view, intent, now_ms) for intent in request.intents]
        except BaseException:
            room.state.clear()
            raise
        return built, view

    async def _build_unique_create(
        self, request: _Request, now_ms: int
    ) -> tuple[RoomView, _Built]:
        # Room version 12 derives the room id from the create event, so two identical create
        # events (same creator, content and millisecond) would name the same room: move the
        # timestamp on until the id is free.
        for attempt in range(1000):
            view = self._new_room_view(request)
            create = await self._build_one(view, request.intents[0], now_ms + attempt)
            room_id = create.event.room_id
            if room_id not in self._rooms and await self._live_room(room_id) is None:
                view.room.room_id = room_id
                return view, create
        raise MatrixError("M_UNKNOWN", "Could not allocate a room id", status=500)

    def _new_room_view(self, request: _Request) -> RoomView:
        assert request.new_room is not None
        version = request.new_room.room_version
        # Room version 12 derives the room id from the create event, once it is built.
        if version.room_id_from_create_event:
            room_id = ""
        else:
            room_id = request.new_room.room_id or random_room_id(self._server_name)
        if request.intents[0].type != "m.room.create":
            raise MatrixError("M_UNKNOWN", "A new room starts with its create event", status=500)
        return RoomView.of(LiveRoom(room_id, version, {}, [], 0, None, 0))

    async def _build_one(self, view: RoomView, intent: EventIntent, now_ms: int) -> _Built:
        version = view.room.room_version
        keys = auth_types_for_event(
            version,
            type=intent.type,
            sender=intent.sender,
            state_key=intent.state_key,
            content=intent.content,
        )
        auth_state = {k: e for k in keys if (e := view.get(k)) is not None}
        event = self._build_event(view, intent, list(auth_state.values()), now_ms)
        create = view.get(CREATE_KEY)
        if create is not None:
            auth_state[CREATE_KEY] = create  # v12 leaves it out of auth_events; the rules need it
        applies_to = None
        try:
            check_auth_rules(version, event, auth_state)
            if event.type == "m.room.redaction":
                applies_to = await self._check_redaction(view, event, auth_state)
        except AuthError as err:
            raise MatrixError("M_FORBIDDEN", err.reason) from None
        if self._relation_checks is not None:
            await self._relation_checks.check(event)  # issue 11: 400 for a bad relation
        replaced = view.get((event.type, event.state_key)) if event.state_key is not None else None
        group, chain, new_group = self._state_group_for(view, event)
        view.apply(event, group, chain)
        return _Built(
            event=event,
            state_group=group,
            replaces_state=replaced.event_id if replaced is not None else None,
            new_group=new_group,
            txn_key=intent.txn_key,
            expiry_ts=expiry_ts_of(event) if self._ephemeral else None,
            applies_redaction_to=applies_to,
        )

    def _build_event(
        self, view: RoomView, intent: EventIntent, auth_events: list[Event], now_ms: int
    ) -> Event:
        version = view.room.room_version
        prev_events = view.extremities
        unsigned: dict[str, Any] = {}
        if intent.state_key is not None:
            replaced = view.get((intent.type, intent.state_key))
            if replaced is not None:
                unsigned = {
                    "replaces_state": replaced.event_id,
                    "prev_content": dict(replaced.content),
                    "prev_sender": replaced.sender,
                }
        reference_hashes = None
        if version.event_id_in_pdu:
            reference_hashes = {
                e.event_id: compute_reference_hash(version, e.get_pdu_json())
                for e in [*auth_events, *prev_events]
            }
        is_create = intent.type == "m.room.create"
        room_id = None if is_create and version.room_id_from_create_event else view.room.room_id
        try:
            return build_event(
                version,
                type=intent.type,
                sender=intent.sender,
                content=intent.content,
                state_key=intent.state_key,
                room_id=room_id,
                prev_event_ids=[e.event_id for e in prev_events],
                auth_event_ids=[e.event_id for e in auth_events],
                depth=view.depth + 1,
                origin_server_ts=now_ms,
                server_name=self._server_name,
                signing_key=self._signing_key,
                redacts=intent.redacts,
                reference_hashes=reference_hashes,
                unsigned=unsigned,
            )
        except EventTooLargeError:
            raise MatrixError("M_TOO_LARGE", "Event is too large") from None
        except InvalidEventError as err:
            raise MatrixError("M_BAD_JSON", str(err)) from None

    async def _check_redaction(
        self, view: RoomView, event: Event, auth_state: dict[tuple[str, str], Event]
    ) -> str | None:
        target_id = event.redacts
        if target_id is None:
            return None  # seed 5: stored, served, but redacts nothing
        stored = await self._events.get_event(target_id)
        target = stored.event if stored is not None else None
        if target is not None and target.room_id != view.room.room_id:
            target = None
        version = view.room.room_version
        check_client_redaction(
            version,
            sender=event.sender,
            room_id=view.room.room_id,
            target=target,
            auth_events=auth_state,
        )
        if target is not None and should_apply_redaction(version, event, target, auth_state):
            return target.event_id
        return None

    def _state_group_for(
        self, view: RoomView, event: Event
    ) -> tuple[int | None, int, NewStateGroup | None]:
        if event.state_key is None:
            if view.state_group is not None or not view.room.state:
                return view.state_group, view.chain_length, None
            # Received events left the room on a resolved state no group holds yet
            # (`storage.received_events`): this event's state is a new snapshot of it.
            self._next_group += 1
            entries = {k: e.event_id for k, e in view.items()}
            group = NewStateGroup(self._next_group, view.room.room_id, None, 0, entries)
            return group.id, 0, group
        self._next_group += 1
        key = (event.type, event.state_key)
        if view.state_group is None or view.chain_length >= MAX_STATE_CHAIN:
            # A full snapshot: the state before this event plus the event itself.
            entries = {k: e.event_id for k, e in view.items()}
            entries[key] = event.event_id
            group = NewStateGroup(
                self._next_group, view.room.room_id or event.room_id, None, 0, entries
            )
        else:
            group = NewStateGroup(
                self._next_group,
                view.room.room_id,
                view.state_group,
                view.chain_length + 1,
                {key: event.event_id},
            )
        return group.id, group.chain_length, group

    async def _live_room(self, room_id: str) -> LiveRoom | None:
        room = self._rooms.get(room_id)
        if room is not None:
            self._rooms.move_to_end(room_id)
            return room
        head = await self._db.run_read("load_room_head", load_room_head_txn, room_id)
        if head is None:
            return None
        ids = [*head.state_ids.values(), *head.extremity_ids]
        found = await self._events.get_events(ids)
        room = LiveRoom(
            room_id=room_id,
            room_version=KNOWN_ROOM_VERSIONS[head.room_version],
            state={k: found[e].event for k, e in head.state_ids.items() if e in found},
            extremities=[found[e].event for e in head.extremity_ids if e in found],
            depth=head.depth,
            state_group=head.state_group,
            chain_length=head.chain_length,
        )
        self._cache_room(room)
        return room

    def _cache_room(self, room: LiveRoom) -> None:
        self._rooms[room.room_id] = room
        self._rooms.move_to_end(room.room_id)
        if len(self._rooms) > self._max_rooms:
            self._rooms.popitem(last=False)


def _changed_state(view: RoomView) -> dict[tuple[str, str], Event]:
    """The current-state keys a view changed (received events may pick an older event)."""
    return {
        key: event
        for key, event in view.overlay.items()
        if (old := view.room.state.get(key)) is None or old.event_id != event.event_id
    }


def _promotable(received: ReceivedEvent, known: KnownEvent) -> bool:
    """Whether a backfilled event held as an outlier (an auth or state event of the join)
    joins the timeline now."""
    return received.backfilled and known.state_group is None and known.rejected is None
