-- Push actions, evaluated when an event is persisted (spec "Push Notifications"), and the
-- per (room, user, thread) notification counts /sync reports.
--
-- One row per (event, local user) whose push rules notify or highlight for the event; the
-- events writer inserts them in the transaction that stores the event. Rows are clustered by
-- stream position (every insert appends to the end of the tree); a room's rows are reached
-- through event_push_actions_room. Deliberately no index leading with user_id over every row:
-- each event of a room with N members would then dirty N scattered pages of it (measured:
-- ~1.3 ms per event per such index with 100 members, more than a whole send costs today).
-- Once a user's read receipt passes a row it is deleted unless it highlights (as Synapse
-- does), so the table holds what is unread, plus highlights for GET /notifications.
CREATE TABLE event_push_actions (
    stream_ordering INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    topological_ordering INTEGER NOT NULL,
    actions TEXT NOT NULL,
    notif INTEGER NOT NULL,
    highlight INTEGER NOT NULL,
    thread_id TEXT NOT NULL,
    received_ts INTEGER NOT NULL,
    PRIMARY KEY (stream_ordering, user_id)
) WITHOUT ROWID;
-- A room's rows in stream order (receipts, redactions; appends at the room's end).
CREATE INDEX event_push_actions_room ON event_push_actions (room_id, stream_ordering);
-- The brief's (user_id, stream_ordering) index, for highlights only: few rows, cheap to keep.
CREATE INDEX event_push_actions_user_highlight ON event_push_actions (user_id, stream_ordering)
    WHERE highlight = 1;
-- The brief's (user_id, room_id, stream_ordering) index, likewise for highlights only.
CREATE INDEX event_push_actions_user_room_highlight
    ON event_push_actions (user_id, room_id, stream_ordering) WHERE highlight = 1;

-- Unread counts per (room, user, thread): incremented by the events writer for each event
-- that notifies, recomputed from event_push_actions when a receipt moves past rows
-- (read_upto: the receipt position the counts were last recomputed for) or an event is
-- redacted. thread_id is 'main' or the thread root's event id. Clustered by room, so the
-- rows one event updates are neighbours.
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
