"""Relations between events, read from content (spec "Forming relationships between events").

Pure: no I/O. An event relates to another when its content has an ``m.relates_to`` object
with a string ``rel_type`` and a string ``event_id`` (as Synapse reads it; anything else is
no relation at all, and is stored and served as an ordinary event). Rich replies
(``m.in_reply_to`` without a ``rel_type``) are not relations in this sense.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from trioserver.events.model import Event

THREAD = "m.thread"
REPLACE = "m.replace"
REFERENCE = "m.reference"
ANNOTATION = "m.annotation"
MAIN_THREAD = "main"


@attrs.frozen
class Relation:
    """A well-formed ``m.relates_to`` of an event.

    Attributes:
        rel_type: the relationship type, e.g. ``m.thread``.
        parent_id: the event related to.
        aggregation_key: an annotation's ``key``, when it is a string (else None).
    """

    rel_type: str
    parent_id: str
    aggregation_key: str | None = None


def relation_of_content(content: Mapping[str, Any]) -> Relation | None:
    """The relation an event's content declares, or None."""
    relates_to = content.get("m.relates_to")
    if not isinstance(relates_to, Mapping):
        return None
    rel_type = relates_to.get("rel_type")
    parent_id = relates_to.get("event_id")
    if not isinstance(rel_type, str) or not isinstance(parent_id, str):
        return None
    key = relates_to.get("key") if rel_type == ANNOTATION else None
    return Relation(rel_type, parent_id, key if isinstance(key, str) else None)


def relation_of(event: Event) -> Relation | None:
    """The relation an event declares, or None (a redacted event has lost its content)."""
    return relation_of_content(event.content)


def thread_id_of(event: Event) -> str:
    """The thread an event belongs to by its own content: the root's id, or ``"main"``.

    Spec "Threading": an event with an ``m.thread`` relation is in the thread of the event it
    names; every other event is in the main timeline (receipts and push use this id). A
    thread root is itself in the main timeline.
    """
    relation = relation_of(event)
    if relation is not None and relation.rel_type == THREAD:
        return relation.parent_id
    return MAIN_THREAD
