"""The checks a new event's relation must pass before the events writer stores it (issue 11).

The spec leaves most of this to servers; these are Synapse's rules (``_validate_event_relation``
in its message handler), each answered 400:

- the parent is in the same room ("Relations must be in the same room"); an unknown parent
  is allowed only when other events already relate to it;
- an annotation has a string ``key`` of at most 500 characters, and one sender annotates one
  event with one key (and event type) only once: ``M_DUPLICATE_ANNOTATION`` (spec
  "Avoiding duplicate annotations");
- a thread cannot start from an event that itself relates to another (spec "Threading":
  "it is not possible to create a thread from an event with an existing relation").

Checks run in the writer, one event at a time in batch order, so two identical annotations
in one batch are caught too (`start_batch` forgets those of the previous batch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trioserver.errors import MatrixError
from trioserver.events.relations import ANNOTATION, THREAD, relation_of

if TYPE_CHECKING:
    from trioserver.events import Event
    from trioserver.stores.events import EventStore
    from trioserver.stores.relations import RelationStore

MAX_KEY_LENGTH = 500


def _bad(message: str, errcode: str = "M_UNKNOWN") -> MatrixError:
    return MatrixError(errcode, message, status=400)


class RelationChecker:
    """Validates the relations of events the writer builds."""

    def __init__(self, events: EventStore, relations: RelationStore) -> None:
        self._events = events
        self._relations = relations
        self._batch_annotations: set[tuple[str, str, str, str]] = set()

    def start_batch(self) -> None:
        """Forget the annotations of the previous batch (they are committed or failed)."""
        self._batch_annotations.clear()

    async def check(self, event: Event) -> None:
        """Refuse an event whose relation breaks the rules above.

        Raises:
            MatrixError: 400 as described in the module docstring.

        Checkpoint: only for an event with a relation.
        """
        relation = relation_of(event)
        if relation is None:
            return
        parent = await self._events.get_event(relation.parent_id)
        if parent is not None and parent.room_id != event.room_id:
            raise _bad("Relations must be in the same room")
        if parent is None and not await self._relations.is_relation_target(relation.parent_id):
            raise _bad("Can't send relation to unknown event")
        if relation.rel_type == ANNOTATION:
            await self._check_annotation(event, relation.parent_id, relation.aggregation_key)
        elif relation.rel_type == THREAD and await self._relations.is_relation(relation.parent_id):
            raise _bad("Cannot start threads from an event with a relation")
        self._relations.note_room_nowait(event.room_id)

    async def _check_annotation(self, event: Event, parent_id: str, key: str | None) -> None:
        if key is None:
            raise _bad("Missing aggregation key")
        if len(key) > MAX_KEY_LENGTH:
            raise _bad("Aggregation key is too long")
        marker = (parent_id, event.type, event.sender, key)
        if marker in self._batch_annotations or await self._relations.has_annotated(*marker):
            raise _bad("Can't send same reaction twice", "M_DUPLICATE_ANNOTATION")
        self._batch_annotations.add(marker)
