-- PostgreSQL: 12_relations.sql without its backfill of older events. A PostgreSQL
-- database starts from an empty schema (or `trioserver port-db`, which copies the tables
-- as they are), so no events predate this file there.

-- Issue 11: relations between events (spec "Forming relationships between events"), indexed
-- as the events writer persists them, and one row per thread (spec "Threading").

-- One row per event whose content has a well-formed `m.relates_to` (rel_type and event_id
-- strings). The orderings are copied from `events` so that pagination of an event's
-- relations reads only this table. A redaction of the relating event deletes its row.
CREATE TABLE event_relations (
    event_id TEXT PRIMARY KEY,
    relates_to_id TEXT NOT NULL,
    relation_type TEXT NOT NULL,
    aggregation_key TEXT,                      -- m.annotation only
    room_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    type TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    topological_ordering BIGINT NOT NULL
);
CREATE INDEX event_relations_by_parent
    ON event_relations (relates_to_id, relation_type, topological_ordering, stream_ordering);

-- One row per thread root with at least one (unredacted) m.thread reply: its latest reply.
CREATE TABLE threads (
    room_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,                   -- the root's event id
    latest_event_id TEXT NOT NULL,
    topological_ordering BIGINT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (room_id, thread_id)
);
CREATE INDEX threads_by_activity ON threads (room_id, topological_ordering, stream_ordering);
-- Aggregations look a root up by its id alone (event ids are unique across rooms).
CREATE INDEX threads_by_thread ON threads (thread_id);
