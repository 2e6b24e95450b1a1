-- Push actions, evaluated when an event is persisted (spec "Push Notifications"), and the
-- per (room, user, thread) notification counts /sync reports.
--
-- What the events writer stores, in the transaction that stores the event, for each event
-- that notifies or highlights some local user: one event_push_events row (the event's room,
-- thread and position) and one narrow event_push_users row per such user. The view
-- event_push_actions joins them into one row per (event, user), with the columns readers
-- (pushers) use. Both tables are clustered by stream position, so every insert appends;
-- a room's events are reached through event_push_events_room. Deliberately no index leading
-- with user_id over every row: each event of a room with N members would dirty N scattered
-- pages of it (measured: ~1.3 ms per event per such index with 100 members, more than a whole
-- send costs today); only highlights, which are few, are indexed by user.
-- A read receipt deletes the rows it passes unless they highlight (as Synapse does), so the
-- tables hold what is unread, plus highlights for GET /notifications.
CREATE TABLE event_push_events (
    stream_ordering INTEGER PRIMARY KEY,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    topological_ordering INTEGER NOT NULL,
    thread_id TEXT NOT NULL,  -- 'main' or the thread root's event id
    received_ts INTEGER NOT NULL
);
CREATE INDEX event_push_events_room ON event_push_events (room_id, stream_ordering);

CREATE TABLE event_push_users (
    stream_ordering INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    actions TEXT NOT NULL,  -- JSON list
    notif INTEGER NOT NULL,
    highlight INTEGER NOT NULL,
    PRIMARY KEY (stream_ordering, user_id)
) WITHOUT ROWID;
CREATE INDEX event_push_users_highlight ON event_push_users (user_id, stream_ordering)
    WHERE highlight = 1;

CREATE VIEW event_push_actions AS
SELECT e.room_id, e.event_id, u.user_id, e.stream_ordering, e.topological_ordering,
    u.actions, u.notif, u.highlight, e.thread_id, e.received_ts
FROM event_push_users AS u JOIN event_push_events AS e USING (stream_ordering);

-- Unread counts per (room, user, thread): incremented by the events writer for each event
-- that notifies, recomputed from the push actions when a receipt moves past them (read_upto:
-- the receipt position they were last recomputed for) or an event is redacted. Clustered by
-- room, so the rows one event updates are neighbours.
CREATE TABLE event_push_summary (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    notif_count INTEGER NOT NULL,
    highlight_count INTEGER NOT NULL,
    stream_ordering INTEGER NOT NULL,
    read_upto INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, user_id, thread_id)
) WITHOUT ROWID;
