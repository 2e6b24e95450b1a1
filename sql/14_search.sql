-- Server-side search (client-server API "Server Side Search", issue 11): a full-text index of
-- the searchable text of events, kept by the events writer in the transaction that stores an
-- event (stores.search). One row per searchable event; its rowid is the event's
-- stream_ordering, so results join `events` on its primary key for the room, sender, type and
-- ordering. What is indexed, by event type (the spec's `keys`):
--   m.room.message -> content.body, m.room.name -> content.name, m.room.topic -> content.topic
-- Redacted and expired (self-destructed) events are deleted from it. Words are stemmed
-- (porter) and case- and accent-folded (unicode61 with remove_diacritics 2).
CREATE VIRTUAL TABLE event_search USING fts5(
    value,
    tokenize = 'porter unicode61 remove_diacritics 2'
);

-- Index the events stored before this file: an upgraded server's history is searchable too.
-- NUL characters are replaced as the writer does (stores.search.searchable_text).
INSERT INTO event_search (rowid, value)
SELECT e.stream_ordering, replace(json_extract(j.json, k.path), char(0), ' ')
FROM events AS e
JOIN event_json AS j ON j.event_id = e.event_id
JOIN (
    SELECT 'm.room.message' AS type, '$.content.body' AS path
    UNION ALL SELECT 'm.room.name', '$.content.name'
    UNION ALL SELECT 'm.room.topic', '$.content.topic'
) AS k ON k.type = e.type
WHERE e.redacted_by IS NULL AND e.rejected IS NULL AND e.outlier = 0
    AND json_type(j.json, k.path) = 'text';
