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
    stream_ordering INTEGER NOT NULL,
    topological_ordering INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX event_relations_by_parent
    ON event_relations (relates_to_id, relation_type, topological_ordering, stream_ordering);

-- One row per thread root with at least one (unredacted) m.thread reply: its latest reply.
CREATE TABLE threads (
    room_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,                   -- the root's event id
    latest_event_id TEXT NOT NULL,
    topological_ordering INTEGER NOT NULL,
    stream_ordering INTEGER NOT NULL,
    PRIMARY KEY (room_id, thread_id)
) WITHOUT ROWID;
CREATE INDEX threads_by_activity ON threads (room_id, topological_ordering, stream_ordering);
-- Aggregations look a root up by its id alone (event ids are unique across rooms).
CREATE INDEX threads_by_thread ON threads (thread_id);

-- Index the events stored before this file, as the writer would have (stores.relations_index):
-- an upgraded server's reactions, edits, references and threads are aggregated too.
INSERT INTO event_relations (event_id, relates_to_id, relation_type, aggregation_key, room_id,
    sender, type, stream_ordering, topological_ordering)
SELECT e.event_id,
    json_extract(j.json, '$.content."m.relates_to".event_id'),
    json_extract(j.json, '$.content."m.relates_to".rel_type'),
    CASE WHEN json_extract(j.json, '$.content."m.relates_to".rel_type') = 'm.annotation'
        AND json_type(j.json, '$.content."m.relates_to".key') = 'text'
        THEN json_extract(j.json, '$.content."m.relates_to".key') END,
    e.room_id, e.sender, e.type, e.stream_ordering, e.topological_ordering
FROM events AS e
JOIN event_json AS j ON j.event_id = e.event_id
WHERE e.redacted_by IS NULL AND e.rejected IS NULL AND e.outlier = 0
    AND json_type(j.json, '$.content."m.relates_to".rel_type') = 'text'
    AND json_type(j.json, '$.content."m.relates_to".event_id') = 'text';

INSERT INTO threads (room_id, thread_id, latest_event_id, topological_ordering, stream_ordering)
SELECT room_id, relates_to_id, event_id, topological_ordering, stream_ordering
FROM (
    SELECT room_id, relates_to_id, event_id, topological_ordering, stream_ordering,
        row_number() OVER (PARTITION BY room_id, relates_to_id
            ORDER BY topological_ordering DESC, stream_ordering DESC) AS position
    FROM event_relations WHERE relation_type = 'm.thread'
)
WHERE position = 1;
